"""Fold an execution's stored events back into its state: proof that the log is the truth."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from noetl.dsl.model import Playbook
from noetl.engine.decide import (
    CancelRequested,
    CommandCompleted,
    CommandFailed,
    Decision,
    Incoming,
    Started,
    decide_all,
)
from noetl.engine.loops import LoopLedger
from noetl.engine.state import ExecutionState


def incoming(event: Mapping[str, Any]) -> Incoming | None:
    """The engine input a stored event stands for, or None for the engine's own outputs."""
    kind = event["event_type"]
    if kind == "playbook.initialized":
        payload = event["payload"]
        reuse = (payload.get("rerun") or {}).get("reuse") or {}
        return Started(dict(payload["workload"]), reuse, payload.get("started_at"))
    if kind == "command.completed":
        payload = event.get("payload") or {}
        problems = tuple(payload.get("problems") or ())
        return CommandCompleted(
            str(event["command_id"]), event["result"], payload.get("variables") or {}, problems
        )
    if kind == "command.failed":
        fields = (event.get("payload") or {}).get("error_fields") or {}
        return CommandFailed(str(event["command_id"]), str(event["error"]), fields)
    if kind == "playbook.cancelled":
        return CancelRequested(str(event["error"] or "cancelled"))
    return None


class Replayer:
    """Decides events one batch at a time and keeps the loop data those decisions produce
    (items of loops entered, iteration results) so later decisions never lack it."""

    def __init__(
        self, playbook: Playbook, state: ExecutionState, new_id: Callable[[], int]
    ) -> None:
        self.playbook = playbook
        self.state = state
        self.new_id = new_id
        self.ledger = LoopLedger()

    def apply(self, incoming: Sequence[Incoming]) -> Decision:
        refs = [
            (change, self.state.commands.get(change.command_id))
            for change in incoming
            if isinstance(change, CommandCompleted)
        ]
        decision = decide_all(
            self.playbook, self.state, incoming, new_id=self.new_id, data=self.ledger.data()
        )
        if decision.needs:  # the ledger saw every decision: nothing can be missing
            raise RuntimeError(f"loop data missing from the replay: {decision.needs}")
        self.ledger.record_events(decision.events)
        for change, ref in refs:
            if ref is not None and ref.iteration is not None:
                self.ledger.record_result(ref.step, ref.run, ref.iteration, change.result)
        self.state = decision.state
        return decision


def fold(
    playbook: Playbook, execution_id: int, events: Iterable[Mapping[str, Any]]
) -> ExecutionState:
    """Replay `events` (in event_id order) through the engine from an empty state."""
    counter = itertools.count(1)
    replayer = Replayer(playbook, ExecutionState(execution_id), lambda: next(counter))
    for event in events:
        change = incoming(event)
        if change is not None:
            replayer.apply([change])
    return replayer.state
