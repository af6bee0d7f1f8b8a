"""Drive the pure engine without any I/O: a fake 'worker' answers each command."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from noetl.dsl import parse_playbook
from noetl.engine import CommandCompleted, CommandFailed, Decision, ExecutionState, Started
from noetl.engine.replay import Replayer
from noetl.protocol.records import CommandRecord, EventRecord

Answer = Callable[[CommandRecord], tuple[bool, Any]]


class Harness:
    def __init__(self, text: str, execution_id: int = 7) -> None:
        self.playbook = parse_playbook(text)
        self.ids = itertools.count(1000)
        self.replayer = Replayer(
            self.playbook, ExecutionState(execution_id), lambda: next(self.ids)
        )
        self.events: list[EventRecord] = []
        self.pending: list[CommandRecord] = []

    def apply(self, incoming: Any) -> Decision:
        decision = self.replayer.apply([incoming])
        self.events.extend(decision.events)
        self.pending.extend(decision.commands)
        return decision

    @property
    def state(self) -> ExecutionState:
        return self.replayer.state

    def start(
        self, workload: dict[str, Any] | None = None, started_at: str | None = None
    ) -> Decision:
        return self.apply(
            Started({**self.playbook.workload, **(workload or {})}, started_at=started_at)
        )

    def run(
        self, answer: Answer | None = None, workload: dict[str, Any] | None = None
    ) -> ExecutionState:
        """Start, then answer commands first-in first-out until nothing is pending."""
        answer = answer or (
            lambda command: (True, command.tool.get("result", {"step": command.step}))
        )
        self.start(workload)
        while self.pending:
            command = self.pending.pop(0)
            ok, value = answer(command)
            self.apply(
                CommandCompleted(command.command_id, value)
                if ok
                else CommandFailed(command.command_id, str(value))
            )
        return self.state

    def kinds(self, step: str | None = None) -> list[str]:
        return [e.event_type.value for e in self.events if step is None or e.step == step]
