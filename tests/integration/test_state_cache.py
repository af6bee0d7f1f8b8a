"""A report is decided from the snapshot the server process wrote last (`server.states`) only
while the row still has that version (migration 0011) and the reported command still runs
(`noetl.write_held`, migration 0013); otherwise it is decided under the locks, from the row."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.engine import ExecutionState
from noetl.errors import ConflictError
from noetl.protocol.outcome import Outcome, Report
from noetl.server import metrics
from noetl.server.flow import Flow
from noetl.server.states import Held
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


async def while_waiting(
    api: httpx.AsyncClient, flow: Flow, playbook: str = CHAIN, payload: dict[str, Any] | None = None
) -> tuple[int, Held]:
    """Start the chain; once `wait` runs, the execution's id and the snapshot held for it."""
    body = {"playbook": playbook, "payload": payload or {}}
    started = await api.post("/api/execute", json=body)
    assert started.status_code == 201, started.text
    execution_id = int(started.json()["execution_id"])

    async def waiting() -> Held | None:
        held = flow.states.get(execution_id)
        if held is None:
            return None
        return held if any(ref.step == "wait" for ref in held.state.commands.values()) else None

    held: Held = await eventually(waiting, timeout=30)
    return execution_id, held


def _marked(state: ExecutionState) -> ExecutionState:
    """The same state with a variable the playbook never sets."""
    data: dict[str, Any] = state.to_json()
    return ExecutionState.from_json({**data, "variables": {**data["variables"], "mark": 1}})


async def _sql(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(str(settings.database_url)) as db:
        cur = await db.execute(sql, params)
        return await cur.fetchall() if cur.description else []


@pytest.mark.parametrize("current", [True, False], ids=["current-version", "stale-version"])
async def test_the_held_snapshot_is_used_only_at_the_rows_version(
    settings: Settings, current: bool
) -> None:
    async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        flow = orchestrator_of(rt).flow
        execution_id, held = await while_waiting(api, flow)
        flow.states.drop(execution_id)
        version = held.version if current else held.version - 1
        flow.states.put(execution_id, Held(version, _marked(held.state), held.catalog_id))
        execution = await wait_for_end(api, str(execution_id), timeout=60)
    assert execution["status"] == "COMPLETED" and execution["result"] == 3
    [(snapshot, written)] = await _sql(
        settings,
        "SELECT state, state_version FROM noetl.execution WHERE execution_id = %s",
        execution_id,
    )
    # held at the row's version: the next decision started from it (the mark went on);
    # at any other version the row's snapshot was read (no mark)
    assert ("mark" in snapshot["variables"]) is current
    assert written == held.version + 2  # `wait` and `end` reported: one write each
    assert flow.states.get(execution_id) is None  # an ended execution is not held


async def test_a_report_of_a_command_no_longer_claimed_is_not_recorded_from_the_snapshot(
    settings: Settings,
) -> None:
    """The row's version does not change when a claim is released (the relay, a lapsed
    lease): the command's own row must still be CLAIMED for its report to be recorded. No
    worker: the test claims and reports as one, through the server's own interfaces."""
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        orchestrator = orchestrator_of(rt)
        flow = orchestrator.flow
        started = await api.post("/api/execute", json={"playbook": CHAIN})
        execution_id = int(started.json()["execution_id"])

        async def run(step: str, result: Any) -> tuple[str, Report]:
            [(event_id, command_id)] = await _sql(
                settings,
                "SELECT event_id, command_id FROM noetl.command"
                " WHERE execution_id = %s AND step = %s",
                execution_id,
                step,
            )
            claimed = await orchestrator.workers.claim(event_id, "test-worker")
            report = Report(
                execution_id,
                command_id,
                claimed.attempt,
                "test-worker",
                Outcome.success(result),
                takes_next=False,  # the next command is published, not handed over
            )
            return command_id, report

        _, first = await run("start", 1)
        await flow.report(first)  # decided under the locks (nothing held yet); now held
        held = flow.states.get(execution_id)
        assert held is not None
        command_id, second = await run("wait", 2)
        await _sql(
            settings,
            "UPDATE noetl.command SET status = 'PENDING', worker_id = NULL, lease_until = NULL"
            " WHERE execution_id = %s AND command_id = %s",
            execution_id,
            command_id,
        )  # released, as the relay releases a lapsed claim: the row's version is unchanged
        stale = metrics.HELD_STALE._value.get()
        with pytest.raises(ConflictError, match="stale"):
            await flow.report(second)
        assert metrics.HELD_STALE._value.get() == stale + 1  # tried from the snapshot, refused
        assert flow.states.get(execution_id) == held
        outcomes = await _sql(
            settings,
            "SELECT count(*) FROM noetl.event WHERE execution_id = %s AND command_id = %s"
            " AND event_type = 'command.completed'",
            execution_id,
            command_id,
        )
        assert outcomes == [(0,)]


async def test_the_polled_detail_of_a_held_snapshot_is_the_rows(settings: Settings) -> None:
    """`GET /api/executions/{id}` builds a held snapshot's detail without reading it back:
    the answer is the same as from the row."""
    async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        flow = orchestrator_of(rt).flow
        execution_id, held = await while_waiting(api, flow)
        from_held = (await api.get(f"/api/executions/{execution_id}")).json()
        flow.states.drop(execution_id)
        from_row = (await api.get(f"/api/executions/{execution_id}")).json()
        flow.states.put(execution_id, held)
        await wait_for_end(api, str(execution_id), timeout=60)
    assert from_held["status"] == "RUNNING" and from_held["pending_commands"]
    assert [s["step"] for s in from_held["steps"]] == ["start", "wait"]
    del from_held["duration_seconds"], from_row["duration_seconds"]
    assert from_held == from_row
