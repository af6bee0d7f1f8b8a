"""The loop data the engine asks for (engine/loops.py), read from the event log.

A loop's items (a list) are in its `step.enter` event; they never change, so they are kept
in a small per-process cache and handed to every decision of a running loop. A finished
loop's results are read once from its iterations' `command.completed` events, when a decision
needs them (a step reading them, or the playbook's result).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from noetl.dsl import Playbook
from noetl.engine import Decision, ExecutionState, Incoming, decide_all
from noetl.engine.loops import LoopData, LoopKey, Need, command_prefix
from noetl.errors import LoopDataMissing
from noetl.store import loops

log = logging.getLogger(__name__)

ITEM_LISTS = 64  # cached item lists per server process
MAX_ROUNDS = 16  # a decision needs at most a few loads; more is an engine bug


class LoopDataLoader:
    def __init__(self) -> None:
        self._items: OrderedDict[tuple[int, str, int], Sequence[Any]] = OrderedDict()

    async def decide(
        self,
        conn: psycopg.AsyncConnection[Any],
        playbook: Playbook,
        state: ExecutionState,
        incoming: Sequence[Incoming],
        new_id: Callable[[], int],
    ) -> Decision:
        """`decide_all` with the loop data it needs, loaded from the log as it asks."""
        items = self._running_items(state)
        results: dict[LoopKey, list[Any]] = {}
        for _ in range(MAX_ROUNDS):
            data = LoopData(items, results)
            decision = decide_all(playbook, state, incoming, new_id=new_id, data=data)
            if not decision.needs:
                return decision
            for need in decision.needs:
                await self._load(conn, state.execution_id, need, items, results)
        raise LoopDataMissing(f"execution {state.execution_id}: loop data still missing")

    def decide_held(
        self,
        playbook: Playbook,
        state: ExecutionState,
        incoming: Sequence[Incoming],
        new_id: Callable[[], int],
    ) -> Decision | None:
        """`decide_all` with the loop items this process holds; None when the decision needs
        anything it would have to load (then `decide` runs, under the locks)."""
        data = LoopData(self._running_items(state), {})
        decision = decide_all(playbook, state, incoming, new_id=new_id, data=data)
        return None if decision.needs else decision

    def _running_items(self, state: ExecutionState) -> dict[LoopKey, Sequence[Any]]:
        """The item lists this process holds of the loops with iterations in flight: a
        decision needs a loop's items to record an iteration's outcome or to issue the next
        ones. Found from the commands in flight, not by walking every step the execution ran
        (a sequential chain's report would read them all); anything else a decision needs
        it asks for (`Decision.needs`)."""
        found: dict[LoopKey, Sequence[Any]] = {}
        for ref in state.commands.values():
            key = (ref.step, ref.run)
            if ref.iteration is None or key in found:
                continue
            cached = self._items.get((state.execution_id, *key))
            if cached is not None:
                found[key] = cached
        return found

    async def _load(
        self,
        conn: psycopg.AsyncConnection[Any],
        execution_id: int,
        need: Need,
        items: dict[LoopKey, Sequence[Any]],
        results: dict[LoopKey, list[Any]],
    ) -> None:
        key = (need.step, need.run)
        if need.kind == "items":
            found = await loops.items(conn, execution_id, need.step, need.run)
            if found is None:
                raise LoopDataMissing(
                    f"execution {execution_id}: no items of loop {need.step!r} run {need.run}"
                )
            items[key] = found
            self._items[(execution_id, *key)] = found
            while len(self._items) > ITEM_LISTS:
                self._items.popitem(last=False)
        else:
            prefix = command_prefix(execution_id, need.step, need.run) + "["
            results[key] = await loops.results(conn, execution_id, need.step, prefix)
            log.debug("loaded %d results of %s run %d", len(results[key]), need.step, need.run)
