"""The state snapshot as the execution row stores it: large step results stay in the log.

Every transaction of a running execution rewrites its snapshot, and a step's result in it is
written again by each of them: serialized, parsed and compressed by PostgreSQL, logged to
the WAL. A chain of 50 steps after one that returned 1 MB took 6.5x as long as with a small
result (benchmarks/README.md §8). So a step result larger than `INLINE_RESULT_BYTES` is not
in the snapshot: the step's `step.exit` event holds it (written in the same transaction as
the snapshot that first leaves it out), and the snapshot names that event:

    "results": {"fetch": null, ...}, "results_in_log": {"fetch": <event id of its step.exit>}

A state loaded from the row (`load`: the locked path, another server process, a restart)
reads those results back from the log by their events' keys. The state a server holds keeps
the values, so the report path reads nothing. Read back from the log, a result is what the
log holds: `jsonb` (an object's keys in its order, as loop results and replays read them).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from psycopg import AsyncConnection

from noetl import jsonfast
from noetl.engine import Decision, ExecutionState
from noetl.errors import NoetlError
from noetl.protocol.events import EventType, ExecutionStatus, StepStatus
from noetl.store import events

INLINE_RESULT_BYTES = 4096  # a larger step result is kept out of the snapshot
EXECUTIONS = 4096  # running executions whose logged results a server process remembers
LOGGED = "results_in_log"


def large(value: Any) -> bool:
    """The value takes more than `INLINE_RESULT_BYTES` as JSON."""
    if isinstance(value, str):  # at most 6 bytes a character once escaped
        if len(value) * 6 <= INLINE_RESULT_BYTES:
            return False
    elif not isinstance(value, dict | list):
        return False  # a number, a boolean, null
    return len(jsonfast.dumps(value)) > INLINE_RESULT_BYTES


class Snapshots:
    """Which large results of each running execution are in which event, as this process
    wrote or read them: a result is left out of a snapshot only while the state still holds
    the very value that event holds (by identity), so a decision that was rolled back, or a
    step that completed again, never leaves a stale reference."""

    def __init__(self, size: int = EXECUTIONS) -> None:
        self._size = size
        self._logged: OrderedDict[int, dict[str, tuple[Any, int]]] = OrderedDict()

    def snapshot(self, decision: Decision) -> dict[str, Any]:
        """The snapshot to write with the decision's events."""
        state = decision.state
        execution_id = state.execution_id
        for event in decision.events:
            if (
                event.event_type is EventType.STEP_EXIT
                and event.status == StepStatus.COMPLETED.value
                and event.step is not None
                and large(event.result)
            ):
                self._remember(execution_id)[event.step] = (event.result, event.event_id)
        data = state.to_json()
        logged = self._logged.get(execution_id)
        if logged:
            self._logged.move_to_end(execution_id)
            refs = {
                name: event_id
                for name, (value, event_id) in logged.items()
                if name in state.results and state.results[name] is value
            }
            if refs:
                data["results"] = {
                    name: None if name in refs else value for name, value in state.results.items()
                }
                data[LOGGED] = refs
        if state.status != ExecutionStatus.RUNNING:
            self._logged.pop(execution_id, None)
        return data

    async def load(self, conn: AsyncConnection[Any], data: dict[str, Any]) -> ExecutionState:
        """The state a row's snapshot stands for, its logged results read back."""
        state = ExecutionState.from_json(await resolved(conn, data))
        refs: dict[str, int] = data.get(LOGGED) or {}
        if refs and state.status == ExecutionStatus.RUNNING:
            remembered = self._remember(state.execution_id)
            for name, event_id in refs.items():
                remembered[name] = (state.results[name], int(event_id))
        return state

    def _remember(self, execution_id: int) -> dict[str, tuple[Any, int]]:
        logged = self._logged.get(execution_id)
        if logged is None:
            logged = self._logged[execution_id] = {}
            while len(self._logged) > self._size:  # forgotten: written inline again
                self._logged.popitem(last=False)
        return logged


async def resolved(conn: AsyncConnection[Any], data: dict[str, Any]) -> dict[str, Any]:
    """A row's snapshot with the results it keeps in the log read back into `results`."""
    refs: dict[str, int] = data.get(LOGGED) or {}
    if not refs:
        return data
    execution_id = int(data["execution_id"])
    found = await events.results_by_id(conn, execution_id, [int(i) for i in refs.values()])
    missing = sorted(name for name, event_id in refs.items() if int(event_id) not in found)
    if missing:
        raise NoetlError(
            f"execution {execution_id}: the results of {', '.join(missing)} are not in the log"
        )
    results = {
        name: found[int(refs[name])] if name in refs else value
        for name, value in data["results"].items()
    }
    return {key: value for key, value in data.items() if key != LOGGED} | {"results": results}
