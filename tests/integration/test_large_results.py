"""A large step result or workload is written once, in the log: the snapshots after it name
its event, and a state loaded from the row (the locked path, another server) reads it back."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from noetl.config import Settings
from noetl.dsl import parse_playbook
from noetl.embedded.runtime import running
from noetl.engine.replay import fold
from noetl.server.snapshots import LOGGED, LOGGED_WORKLOAD, Snapshots, resolved
from tests.conftest import event_log, run_playbook, wait_for_end
from tests.integration.test_schedules import orchestrator_of
from tests.integration.test_state_cache import while_waiting

CHAIN = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: large, path: tests/large}
workload: {ids: [], tag: "t{{ 40 + 2 }}"}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'blob': 'x' * 20000, 'n': 1}"}
    next: [wait]
  - step: wait
    tool:
      kind: python
      input: {n: "{{ start.n }}"}
      code: "import time; time.sleep(1.5); result = n + 1"
    next: [end]
  - step: end
    tool:
      kind: python
      input: {blob: "{{ start.blob }}", w: "{{ wait }}", ids: "{{ ids }}", tag: "{{ tag }}"}
      code: "result = {'length': len(blob), 'w': w, 'ids': len(ids), 'tag': tag}"
"""


async def _row(settings: Settings, execution_id: int) -> dict[str, Any]:
    async with await psycopg.AsyncConnection.connect(
        str(settings.database_url), row_factory=dict_row
    ) as db:
        cur = await db.execute(
            "SELECT state, pg_column_size(state) AS size FROM noetl.execution"
            " WHERE execution_id = %s",
            (execution_id,),
        )
        row = await cur.fetchone()
        assert row is not None
        row["resolved"] = await resolved(db, row["state"])
        cur = await db.execute(
            "SELECT event_id, result FROM noetl.event WHERE execution_id = %s"
            " AND event_type = 'step.exit' AND step = 'start'",
            (execution_id,),
        )
        row["start_exit"] = await cur.fetchone()
        return row


@pytest.mark.parametrize("from_row", [False, True], ids=["held", "read-from-the-row"])
async def test_a_large_result_is_named_by_its_event_and_read_back(
    settings: Settings, from_row: bool
) -> None:
    async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        flow = orchestrator_of(rt).flow
        payload = {"ids": list(range(2000))}  # ~10 KB
        execution_id, _ = await while_waiting(api, flow, CHAIN, payload)
        during = await _row(settings, execution_id)
        if from_row:  # as another server process would: nothing held, nothing remembered
            flow.states.drop(execution_id)
            flow.snapshots = Snapshots()
        execution = await wait_for_end(api, str(execution_id), timeout=60)
        events = await event_log(api, str(execution_id))
    assert execution["status"] == "COMPLETED", execution
    assert execution["result"] == {"length": 20000, "w": 2, "ids": 2000, "tag": "t42"}
    # while `wait` ran: the snapshot named start's step.exit, which holds the result
    state, start_exit = during["state"], during["start_exit"]
    assert state["results"]["start"] is None and during["size"] < 4096
    assert state[LOGGED] == {"start": start_exit["event_id"]}
    assert start_exit["result"] == {"blob": "x" * 20000, "n": 1}
    assert during["resolved"]["results"]["start"] == start_exit["result"]
    # the workload: in the playbook.initialized event, the rendered default in the snapshot
    assert state["workload"] == {"tag": "t42"} and LOGGED_WORKLOAD in state
    assert during["resolved"]["workload"] == {"ids": list(range(2000)), "tag": "t42"}
    # the last snapshot still names it (the state read from the row remembered it), and the
    # fold of the log is that snapshot with the result read back
    after = await _row(settings, execution_id)
    assert after["state"][LOGGED] == {"start": start_exit["event_id"]}
    assert after["state"][LOGGED_WORKLOAD] == state[LOGGED_WORKLOAD]
    replayed = fold(parse_playbook(CHAIN), execution_id, events)
    assert replayed.to_json() == after["resolved"]


async def test_a_rerun_gets_the_large_workload_and_results_from_the_log(
    api: httpx.AsyncClient,
) -> None:
    payload = {"ids": list(range(2000))}
    quick = CHAIN.replace("time.sleep(1.5); ", "")
    first = await run_playbook(api, quick, payload)
    assert first["status"] == "COMPLETED", first
    response = await api.post(
        f"/api/executions/{first['execution_id']}/rerun", json={"from_step": "end"}
    )
    assert response.status_code == 201, response.text
    again = await wait_for_end(api, response.json()["execution_id"])
    assert again["status"] == "COMPLETED", again
    assert (
        again["result"] == first["result"] == {"length": 20000, "w": 2, "ids": 2000, "tag": "t42"}
    )
