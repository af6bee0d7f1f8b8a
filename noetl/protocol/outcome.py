"""What running a command produced (`Outcome`), the worker's report of it (`Report`), and the
server's answer (`ReportReply`). Typed on both sides; the JSON shape of a report is the body of
`POST /api/events` with `command.completed` / `command.failed` (the seed's names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from noetl.protocol.command import ClaimedCommand
from noetl.protocol.events import CommandStatus, EventType, ExecutionStatus


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt: a value, or an error message. Never raises to the caller."""

    ok: bool
    result: Any = None
    error: str | None = None
    duration: float | None = None  # seconds the tool (or pipeline) ran
    variables: Mapping[str, Any] = field(default_factory=dict)  # written by pipeline `set`
    problems: tuple[str, ...] = ()  # template problems in `set` / `when` met on the worker
    log: Mapping[str, str] = field(default_factory=dict)  # stdout/stderr the tools printed
    masked: bool = False  # the worker replaced a secret value by *** (noetl.masking)
    # a failure's `output.error` beyond the message: status, kind, retryable (error_fields)
    error_fields: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def success(cls, result: Any, **fields: Any) -> Outcome:
        return cls(True, result, None, **fields)

    @classmethod
    def failure(cls, error: str, **fields: Any) -> Outcome:
        return cls(False, None, error, **fields)

    def timed(self, duration: float) -> Outcome:
        """This outcome with its duration: `dataclasses.replace` costs twice as much, and a
        worker times every command."""
        return Outcome(
            self.ok,
            self.result,
            self.error,
            duration,
            self.variables,
            self.problems,
            self.log,
            self.masked,
            self.error_fields,
        )

    @property
    def event_type(self) -> EventType:
        return EventType.COMMAND_COMPLETED if self.ok else EventType.COMMAND_FAILED

    @property
    def status(self) -> CommandStatus:
        return CommandStatus.COMPLETED if self.ok else CommandStatus.FAILED


@dataclass(frozen=True)
class Report:
    """A worker's (or the server's own) outcome for one attempt of a command."""

    execution_id: int
    command_id: str
    attempt: int
    worker_id: str
    outcome: Outcome
    takes_next: bool = True  # the worker may be handed the next command (continuation)

    @property
    def event_type(self) -> EventType:
        return self.outcome.event_type

    def to_json(self) -> dict[str, Any]:
        outcome = self.outcome
        return {
            "execution_id": self.execution_id,
            "event_type": outcome.event_type.value,
            "command_id": self.command_id,
            "attempt": self.attempt,
            "worker_id": self.worker_id,
            "result": outcome.result if outcome.ok else None,
            "error": outcome.error,
            "duration": outcome.duration,
            "variables": dict(outcome.variables) or None,
            "problems": list(outcome.problems) or None,
            "log": dict(outcome.log) or None,
            **({} if self.takes_next else {"takes_next": False}),
            **({"masked": True} if outcome.masked else {}),
            **({"error_fields": dict(outcome.error_fields)} if outcome.error_fields else {}),
        }


@dataclass(frozen=True)
class ReportReply:
    """The server's answer to a recorded report: the execution's status after the decision,
    how many commands the decision issued, and (continuation) the one next command, already
    claimed for the reporting worker, when the decision issued exactly one it can run."""

    status: ExecutionStatus
    issued: int = 0
    next: ClaimedCommand | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status.value, "issued": self.issued}
        if self.next is not None:
            body["next"] = self.next.to_json()
        return body

    @classmethod
    def from_json(cls, body: Any) -> ReportReply:
        try:
            following = body.get("next")
            return cls(
                ExecutionStatus(body["status"]),
                int(body.get("issued", 0)),
                None if following is None else ClaimedCommand.from_json(following),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a report reply: {exc!r}") from None


@dataclass(frozen=True)
class Retry:
    """A pipeline item about to be tried again by its policy."""

    item: str  # the item's label
    next_try: int  # the try about to run (2 for the first retry)
    attempts: int  # tries in all
    delay: float  # seconds before it runs
    error: str  # why (the failed try's error, or "by policy")

    def line(self) -> str:
        return f"retry {self.next_try}/{self.attempts} in {self.delay:.1f} s: {self.error}"

    def to_json(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "try": self.next_try,
            "attempts": self.attempts,
            "delay": self.delay,
            "error": self.error,
        }
