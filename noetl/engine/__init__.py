"""The pure engine: (playbook, state, event) → decision. No clock, no ids, no I/O inside."""

from noetl.engine.decide import (
    CancelRequested,
    CommandCompleted,
    CommandFailed,
    Decision,
    Incoming,
    Started,
    decide,
    decide_all,
    give_up,
)
from noetl.engine.state import ExecutionState

__all__ = [
    "CancelRequested",
    "CommandCompleted",
    "CommandFailed",
    "Decision",
    "ExecutionState",
    "Incoming",
    "Started",
    "decide",
    "decide_all",
    "give_up",
]
