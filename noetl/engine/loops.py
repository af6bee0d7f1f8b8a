"""Loop data kept out of the state snapshot: a loop's items and its iterations' results.

The snapshot holds only a loop's counters, so its size (and the cost of every transaction
that rewrites it) does not grow with the number of items. The data lives in the event log:

- the items of a loop over a list are in the payload of the loop's `step.enter` event
  (`{"run": n, "items": [...]}`); a loop over an integer `n` iterates `range(n)`, stored nowhere;
- each iteration's result is in its `command.completed` event (or, in a re-run, its
  `command.reused` event).

The engine asks for what it lacks: a decision with `needs` changed nothing, and the caller
loads the named data (`LoopData`) and decides again. `LoopLedger` keeps that data in memory
for callers that see every decision (the replay fold, tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from noetl.protocol.events import EventType

LoopKey = tuple[str, int]  # (step, run)


@dataclass(frozen=True)
class Need:
    """Data the engine lacks: the items of a loop over a list, or a finished loop's results."""

    kind: Literal["items", "results"]
    step: str
    run: int


class NeedData(Exception):  # a signal inside the engine, never raised out of it
    def __init__(self, need: Need) -> None:
        super().__init__(need)
        self.need = need


@dataclass(frozen=True)
class LoopData:
    """What the caller hands the engine: items by loop, and stored results by loop, indexed
    by iteration (None where there is none; the list may be shorter than the loop). Results
    of outcomes decided in the same call are added by the engine."""

    items: Mapping[LoopKey, Sequence[Any]] = field(default_factory=dict)
    results: Mapping[LoopKey, Sequence[Any]] = field(default_factory=dict)


NO_DATA = LoopData()


def command_prefix(execution_id: int, step: str, run: int) -> str:
    """The command id of a step's run; a loop iteration's id adds `[index]`."""
    return f"{execution_id}:{step}" + (f"#{run}" if run > 1 else "")


def iteration_of(command_id: str) -> int | None:
    """The loop index a command id ends with (`…[12]`), or None."""
    if not command_id.endswith("]"):
        return None
    head, _, index = command_id[:-1].rpartition("[")
    return int(index) if head and index.isdigit() else None


@dataclass
class LoopLedger:
    """Loop items and results gathered from the engine's own decisions, in memory."""

    items: dict[LoopKey, Sequence[Any]] = field(default_factory=dict)
    results: dict[LoopKey, list[Any]] = field(default_factory=dict)

    def data(self) -> LoopData:
        return LoopData(self.items, self.results)

    def record_events(self, events: Iterable[Any]) -> None:
        """Remember the items of loops entered (from `step.enter` events' payloads) and the
        results of iterations a re-run reused (`command.reused`)."""
        for event in events:
            payload = event.payload or {}
            if event.event_type == EventType.STEP_ENTER and "items" in payload:
                self.items[(str(event.step), int(payload["run"]))] = payload["items"]
            elif (
                event.event_type == EventType.COMMAND_REUSED
                and payload.get("iteration") is not None
            ):
                step, run = str(event.step), int(payload["run"])
                self.record_result(step, run, int(payload["iteration"]), event.result)

    def record_result(self, step: str, run: int, iteration: int, result: Any) -> None:
        found = self.results.setdefault((step, run), [])
        if len(found) <= iteration:
            found.extend([None] * (iteration + 1 - len(found)))
        found[iteration] = result
