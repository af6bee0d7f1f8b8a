"""What the server's modules hand each other: a transaction's effects."""

from __future__ import annotations

from dataclasses import dataclass, field

from noetl.protocol.command import ClaimedCommand
from noetl.protocol.outcome import Report
from noetl.protocol.records import CommandRecord

SERVER_WORKER = "noetl-server"  # the claimant of the commands the server runs itself


@dataclass
class Effects:
    """What a transaction leaves to do after its commit: NATS publishes, parents to tell of
    finished sub-playbooks, children to cancel, and outcomes to report on the server's own
    commands. Done after commit; the relay repairs any of it a crash interrupts."""

    publish: list[CommandRecord] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    # continuation: the next commands claimed in the transaction for the reporting workers,
    # by the index of the report whose answer takes each (instead of a NATS message)
    handed: dict[int, ClaimedCommand] = field(default_factory=dict)
    issued: int = 0  # commands issued (a metric, counted once committed)
    # executions that reached a terminal state: id, status, error
    ended: list[tuple[int, str, str | None]] = field(default_factory=list)
