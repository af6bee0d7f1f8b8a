"""Fold an execution's stored events back into its state: proof that the log is the truth."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from noetl.dsl.model import Playbook
from noetl.engine.decide import (
    CancelRequested,
    CommandCompleted,
    CommandFailed,
    Incoming,
    Started,
    decide,
)
from noetl.engine.state import ExecutionState


def incoming(event: Mapping[str, Any]) -> Incoming | None:
    """The engine input a stored event stands for, or None for the engine's own outputs."""
    kind = event["event_type"]
    if kind == "playbook.initialized":
        return Started(dict(event["payload"]["workload"]))
    if kind == "command.completed":
        variables = (event.get("payload") or {}).get("variables") or {}
        return CommandCompleted(str(event["command_id"]), event["result"], variables)
    if kind == "command.failed":
        return CommandFailed(str(event["command_id"]), str(event["error"]))
    if kind == "playbook.cancelled":
        return CancelRequested(str(event["error"] or "cancelled"))
    return None


def fold(
    playbook: Playbook, execution_id: int, events: Iterable[Mapping[str, Any]]
) -> ExecutionState:
    """Replay `events` (in event_id order) through the engine from an empty state."""
    counter = itertools.count(1)
    state = ExecutionState(execution_id)
    for event in events:
        change = incoming(event)
        if change is not None:
            state = decide(playbook, state, change, new_id=lambda: next(counter)).state
    return state
