"""The state snapshot as the execution row stores it: large values stay in the event log.

Every transaction of a running execution rewrites its snapshot, and every value in it is
written again by each of them: serialized, parsed and compressed by PostgreSQL, logged to
the WAL. A 100-step chain after a step that returned 1 MB ran at 92 steps/s against 633
with a small result; with a 1 MB payload it took 17x as long (benchmarks/README.md §8). So
a step result larger than `INLINE_RESULT_BYTES` is not in the snapshot: the step's
`step.exit` event holds it (written in the same transaction as the snapshot that first
leaves it out), and the snapshot names that event:

    "results": {"fetch": null, ...}, "results_in_log": {"fetch": <event id of its step.exit>}

Nor is a large workload (the payload over the playbook's defaults): the execution's
`playbook.initialized` event holds it, and the snapshot keeps only what rendering the
defaults' templates changed: `"workload": {<rendered keys>}, "workload_in_log": <its id>`.

A state loaded from the row (`load`: the locked path, another server process, a restart)
reads those values back from the log by their events' keys. The state a server holds keeps
the values, so the report path reads nothing. Read back from the log, a value is what the
log holds: `jsonb` (an object's keys in its order, as loop results and replays read them).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection

from noetl import jsonfast
from noetl.engine import Decision, ExecutionState
from noetl.errors import NoetlError
from noetl.protocol.events import EventType, ExecutionStatus, StepStatus
from noetl.protocol.records import EventRecord
from noetl.store import events

INLINE_RESULT_BYTES = 4096  # a larger step result is kept out of the snapshot
# running executions whose logged values a server process remembers: what it remembers
# serves the states it holds (server.states, as many), a state read from a row is new anyway
EXECUTIONS = 1024
LOGGED = "results_in_log"
LOGGED_WORKLOAD = "workload_in_log"


def large(value: Any) -> bool:
    """The value takes more than `INLINE_RESULT_BYTES` as JSON."""
    if isinstance(value, str):  # at most 6 bytes a character once escaped
        if len(value) * 6 <= INLINE_RESULT_BYTES:
            return False
    elif not isinstance(value, dict | list):
        return False  # a number, a boolean, null
    return len(jsonfast.dumps(value)) > INLINE_RESULT_BYTES


@dataclass
class _Logged:
    """An execution's values that are in the log: each by the event holding it."""

    results: dict[str, tuple[Any, int]] = field(default_factory=dict)
    workload: tuple[Any, int, dict[str, Any]] | None = None  # the value, event, rendered keys


class Snapshots:
    """Which large values of each running execution are in which event, as this process
    wrote or read them: a value is left out of a snapshot only while the state still holds
    the very value that event holds (by identity), so a decision that was rolled back, or a
    step that completed again, never leaves a stale reference."""

    def __init__(self, size: int = EXECUTIONS) -> None:
        self._size = size
        self._logged: OrderedDict[int, _Logged] = OrderedDict()

    def snapshot(self, decision: Decision, recorded: Sequence[EventRecord] = ()) -> dict[str, Any]:
        """The snapshot to write with the decision's events and the `recorded` ones (the
        `playbook.initialized` event of a start among them)."""
        state = decision.state
        execution_id = state.execution_id
        for event in recorded:
            if event.event_type is EventType.PLAYBOOK_INITIALIZED and large(state.workload):
                given = event.payload["workload"]
                if given.keys() <= state.workload.keys():
                    rendered = {  # as JSON: 1 == 1.0 == True in Python
                        key: value
                        for key, value in state.workload.items()
                        if key not in given or jsonfast.dumps(given[key]) != jsonfast.dumps(value)
                    }
                    self._remember(execution_id).workload = (
                        state.workload,
                        event.event_id,
                        rendered,
                    )
        for event in decision.events:
            if (
                event.event_type is EventType.STEP_EXIT
                and event.status == StepStatus.COMPLETED.value
                and event.step is not None
                and large(event.result)
            ):
                self._remember(execution_id).results[event.step] = (event.result, event.event_id)
        data = state.to_json()
        logged = self._logged.get(execution_id)
        if logged is not None:
            self._logged.move_to_end(execution_id)
            refs = {
                name: event_id
                for name, (value, event_id) in logged.results.items()
                if name in state.results and state.results[name] is value
            }
            if refs:
                data["results"] = {
                    name: None if name in refs else value for name, value in state.results.items()
                }
                data[LOGGED] = refs
            if logged.workload is not None and logged.workload[0] is state.workload:
                _, data[LOGGED_WORKLOAD], data["workload"] = logged.workload
        if state.status != ExecutionStatus.RUNNING:
            self._logged.pop(execution_id, None)
        return data

    async def load(self, conn: AsyncConnection[Any], data: dict[str, Any]) -> ExecutionState:
        """The state a row's snapshot stands for, its logged values read back."""
        state = ExecutionState.from_json(await resolved(conn, data))
        refs: dict[str, int] = data.get(LOGGED) or {}
        workload = data.get(LOGGED_WORKLOAD)
        if (refs or workload is not None) and state.status == ExecutionStatus.RUNNING:
            remembered = self._remember(state.execution_id)
            for name, event_id in refs.items():
                remembered.results[name] = (state.results[name], int(event_id))
            if workload is not None:
                remembered.workload = (state.workload, int(workload), data["workload"])
        return state

    def _remember(self, execution_id: int) -> _Logged:
        logged = self._logged.get(execution_id)
        if logged is None:
            logged = self._logged[execution_id] = _Logged()
            while len(self._logged) > self._size:  # forgotten: written inline again
                self._logged.popitem(last=False)
        return logged


async def resolved(conn: AsyncConnection[Any], data: dict[str, Any]) -> dict[str, Any]:
    """A row's snapshot with the values it keeps in the log read back into it."""
    refs: dict[str, int] = data.get(LOGGED) or {}
    workload = data.get(LOGGED_WORKLOAD)
    if not refs and workload is None:
        return data
    execution_id = int(data["execution_id"])
    wanted = [int(i) for i in refs.values()]
    found = await events.results_by_id(conn, execution_id, wanted) if wanted else {}
    missing = sorted(name for name, event_id in refs.items() if int(event_id) not in found)
    loaded = {key: value for key, value in data.items() if key not in (LOGGED, LOGGED_WORKLOAD)}
    if workload is not None:
        initialized = await events.payload_of(conn, execution_id, int(workload))
        if initialized is None:
            missing.append("the workload")
        else:
            loaded["workload"] = {**initialized["workload"], **data["workload"]}
    if missing:
        raise NoetlError(f"execution {execution_id}: {', '.join(missing)} not in the log")
    if refs:
        loaded["results"] = {
            name: found[int(refs[name])] if name in refs else value
            for name, value in data["results"].items()
        }
    return loaded
