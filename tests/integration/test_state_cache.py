"""The report transaction decides from the snapshot the server process wrote last
(`server.states`) only while the locked row still has that version (migration 0011); any
other version is read from the row."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.engine import ExecutionState
from noetl.server.flow import Flow
from tests.conftest import eventually, wait_for_end
from tests.integration.test_schedules import orchestrator_of

CHAIN = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: cached, path: tests/cached}
workflow:
  - step: start
    tool: {kind: python, code: "result = 1"}
    next: [wait]
  - step: wait
    tool:
      kind: python
      input: {x: "{{ start }}"}
      code: "import time; time.sleep(1.5); result = x + 1"
    next: [end]
  - step: end
    tool: {kind: python, input: {x: "{{ wait }}"}, code: "result = x + 1"}
"""


async def _while_waiting(api: httpx.AsyncClient, flow: Flow) -> tuple[int, int, ExecutionState]:
    """Start the chain; once `wait` runs, the execution's id and the entry held for it."""
    started = await api.post("/api/execute", json={"playbook": CHAIN})
    assert started.status_code == 201, started.text
    execution_id = int(started.json()["execution_id"])

    async def held() -> tuple[int, ExecutionState] | None:
        entry = flow.states.get(execution_id)
        running = entry is not None and any(
            ref.step == "wait" for ref in entry[1].commands.values()
        )
        return entry if running else None

    version, state = await eventually(held, timeout=30)
    return execution_id, version, state


def _marked(state: ExecutionState) -> ExecutionState:
    """The same state with a variable the playbook never sets."""
    data: dict[str, Any] = state.to_json()
    return ExecutionState.from_json({**data, "variables": {**data["variables"], "mark": 1}})


async def _final_state(settings: Settings, execution_id: int) -> tuple[dict[str, Any], int]:
    async with await psycopg.AsyncConnection.connect(str(settings.database_url)) as db:
        cur = await db.execute(
            "SELECT state, state_version FROM noetl.execution WHERE execution_id = %s",
            (execution_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


@pytest.mark.parametrize("current", [True, False], ids=["current-version", "stale-version"])
async def test_the_held_snapshot_is_used_only_at_the_rows_version(
    settings: Settings, current: bool
) -> None:
    async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        flow = orchestrator_of(rt).flow
        execution_id, version, state = await _while_waiting(api, flow)
        flow.states.drop(execution_id)
        flow.states.put(execution_id, version if current else version - 1, _marked(state))
        execution = await wait_for_end(api, str(execution_id), timeout=60)
    assert execution["status"] == "COMPLETED" and execution["result"] == 3
    snapshot, written = await _final_state(settings, execution_id)
    # held at the row's version: the next decision started from it (the mark went on);
    # at any other version the row's snapshot was read (no mark)
    assert ("mark" in snapshot["variables"]) is current
    assert written == version + 2  # `wait` and `end` reported: one write each
    assert flow.states.get(execution_id) is None  # an ended execution is not held
