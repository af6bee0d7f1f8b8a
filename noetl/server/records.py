"""What the server's modules hand each other: a worker's report, and a transaction's effects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from noetl.protocol.events import EventType
from noetl.protocol.records import CommandRecord


@dataclass(frozen=True)
class Report:
    """A worker's outcome for one attempt of a command."""

    execution_id: int
    command_id: str
    event_type: EventType  # command.completed | command.failed
    attempt: int
    worker_id: str
    result: Any = None
    error: str | None = None
    duration: float | None = None
    variables: dict[str, Any] = field(default_factory=dict)


SERVER_WORKER = "noetl-server"  # the claimant of the commands the server runs itself


@dataclass
class Effects:
    """What a transaction leaves to do after its commit: NATS publishes, parents to tell of
    finished sub-playbooks, children to cancel, and outcomes to report on the server's own
    commands. Done after commit; the relay repairs any of it a crash interrupts."""

    publish: list[CommandRecord] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)  # executions that reached a terminal state
    reports: list[Report] = field(default_factory=list)
