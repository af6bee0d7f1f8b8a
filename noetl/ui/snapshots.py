"""A short-lived cache of what open UI pages poll, so N pages cost about one page.

Each open execution page asks for its execution's progress every second; during a loop the
state changes on every report. Serving the same answer to every page for `max_age` seconds
bounds the reads of the state snapshot to one per execution per `max_age`, however many
pages are open."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Snapshots(Generic[K, V]):
    def __init__(
        self, max_age: float, size: int = 256, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age = max_age
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    async def get(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        now = self.clock()
        found = self._entries.get(key)
        if found is not None and now - found[0] < self.max_age:
            return found[1]
        value = await load()
        self._entries[key] = (now, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)


def progress_of(row: dict[str, Any]) -> dict[str, Any]:
    """An execution's status and per-step progress, without the loop items or results."""
    state = row.get("state") or {}
    steps = []
    for name, step in state.get("steps", {}).items():
        entry: dict[str, Any] = {"step": name, "status": step["status"], "runs": step["runs"]}
        loop = step.get("loop")
        if loop:
            entry["loop"] = {
                "count": loop["count"] if "count" in loop else len(loop["items"]),
                "succeeded": loop["succeeded"],
                "failed": loop["failed"],
                "in_flight": loop["in_flight"],
            }
        steps.append(entry)
    return {"steps": steps, "pending_commands": len(state.get("commands", {}))}
