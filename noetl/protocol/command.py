"""A command as the worker sees it, and the server's answers about commands: claims, leases.

Typed on both sides of the HTTP boundary; `to_json` / `from_json` are the only codecs. Ids are
integers here and strings on the wire (a browser reads them too).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from noetl.protocol.events import CommandStatus


@dataclass(frozen=True)
class ClaimedCommand:
    """One attempt of a command, held by `worker_id` until `lease_seconds` pass unrenewed."""

    execution_id: int
    event_id: int  # the id of its `command.issued` event: what NATS carries
    command_id: str
    step: str
    tool: Mapping[str, Any]  # {"kind": ..., **rendered fields}
    input: Mapping[str, Any]
    attempt: int
    worker_id: str
    iteration: int | None = None
    lease_seconds: float | None = None

    @property
    def kind(self) -> str:
        return str(self.tool.get("kind", ""))

    def to_json(self) -> dict[str, Any]:
        return {
            "execution_id": str(self.execution_id),
            "event_id": str(self.event_id),
            "command_id": self.command_id,
            "step": self.step,
            "iteration": self.iteration,
            "tool": self.tool,
            "input": self.input,
            "attempt": self.attempt,
            "worker_id": self.worker_id,
            "lease_seconds": self.lease_seconds,
        }

    @classmethod
    def from_json(cls, body: Any) -> ClaimedCommand:
        """Raises ValueError when `body` is not a claimed command."""
        try:
            tool, tool_input = body["tool"], body.get("input") or {}
            if not isinstance(tool, Mapping) or not isinstance(tool_input, Mapping):
                raise TypeError("tool and input must be objects")
            lease = body.get("lease_seconds")
            iteration = body.get("iteration")
            return cls(  # in the fields' order: a worker reads one per step
                int(body["execution_id"]),
                int(body["event_id"]),
                str(body["command_id"]),
                str(body["step"]),
                tool,
                tool_input,
                int(body["attempt"]),
                str(body["worker_id"]),
                None if iteration is None else int(iteration),
                None if lease is None else float(lease),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a claimed command: {exc!r}") from None


@dataclass(frozen=True)
class Refusal:
    """Why a claim was refused, as the HTTP status the claim alone would have had."""

    status: int  # 404: no such command; 409: another live attempt holds it, or it ended
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "message": self.message}


@dataclass(frozen=True)
class ClaimReply:
    """The answer to a batch claim (`POST /api/commands/claim`)."""

    claimed: tuple[ClaimedCommand, ...] = ()
    refused: Mapping[int, Refusal] = field(default_factory=dict)  # by event id

    def to_json(self) -> dict[str, Any]:
        return {
            "claimed": [command.to_json() for command in self.claimed],
            "refused": {str(event_id): r.to_json() for event_id, r in self.refused.items()},
        }

    @classmethod
    def from_json(cls, body: Any) -> ClaimReply:
        """Raises ValueError when `body` is not a claim reply."""
        try:
            claimed = tuple(ClaimedCommand.from_json(c) for c in body["claimed"])
            refused = {
                int(event_id): Refusal(int(r["status"]), str(r.get("message", "")))
                for event_id, r in body["refused"].items()
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a claim reply: {exc!r}") from None
        return cls(claimed, refused)


@dataclass(frozen=True)
class LeaseReply:
    """The answer to a lease renewal: the command's status, and whether to keep running."""

    status: CommandStatus
    superseded: bool = False  # a newer attempt holds the command: this one must stop

    @property
    def keep_going(self) -> bool:
        return self.status is CommandStatus.CLAIMED and not self.superseded

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "superseded": self.superseded,
            "continue": self.keep_going,
        }

    @classmethod
    def from_json(cls, body: Any) -> LeaseReply:
        try:
            return cls(CommandStatus(body["status"]), bool(body.get("superseded", False)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a lease reply: {exc!r}") from None
