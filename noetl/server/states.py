"""The state snapshots this server wrote last, by execution (a bounded, per-process cache).

Every report transaction locks its execution's row and decides from the row's snapshot. The
snapshot grows with the steps run (their results, their states), so reading it back, parsing
it and rebuilding the engine's state cost a sequential chain more at every step, for a
snapshot this same process wrote one transaction earlier. So the process keeps the state it
wrote with the row's `state_version` after that write; the lock statement returns the
snapshot only when the row's version differs (another server wrote it, the entry was
evicted, a cancel went through: `store.commands.begin_locked`). The version comes from the
locked row, so a stale entry is never used, and an entry is put only after its COMMIT.

The report path (`server.flow`) goes further with a held snapshot: it decides before locking
and sends the writes in one round trip, the snapshot and the reported commands' outcomes as
compare-and-set (`store.decisions.commit_held`); when the precondition fails, nothing is
written and the locked path decides from the row.

The engine never changes the state it decides from (it copies what it changes), so one
object can be shared by the cache and the next decision.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from noetl.engine import ExecutionState
from noetl.protocol.events import ExecutionStatus

SIZE = 1024  # running executions whose snapshot a server process keeps


@dataclass(frozen=True)
class Held:
    """A snapshot as written: the row's `state_version` after the write, the state, and the
    execution's playbook (`catalog_id`, which never changes)."""

    version: int
    state: ExecutionState
    catalog_id: int


class States:
    def __init__(self, size: int = SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[int, Held] = OrderedDict()

    def get(self, execution_id: int) -> Held | None:
        """The snapshot held for an execution, if any."""
        entry = self._entries.get(execution_id)
        if entry is not None:
            self._entries.move_to_end(execution_id)
        return entry

    def put(self, execution_id: int, held: Held) -> None:
        """Keep a snapshot written and committed; an ended execution's is dropped, and an
        older version never replaces a newer one."""
        if held.state.status != ExecutionStatus.RUNNING:
            self._entries.pop(execution_id, None)
            return
        current = self._entries.get(execution_id)
        if current is not None and current.version >= held.version:
            return
        self._entries[execution_id] = held
        self._entries.move_to_end(execution_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def drop(self, execution_id: int) -> None:
        self._entries.pop(execution_id, None)

    def __len__(self) -> int:
        return len(self._entries)
