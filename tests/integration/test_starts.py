"""Top-level executions started at the same time are written together: one transaction and
one round trip for all of them (`Flow._start_batch`), each row inserted once with its first
snapshot, which the server then holds; a start that cannot be written fails alone."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import httpx
import psycopg
import psycopg.errors

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.server.flow import Flow
from tests.conftest import wait_for_end
from tests.integration.test_schedules import orchestrator_of, register

CHAIN = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: started-together, path: tests/started-together}
workload: {items: [1, 2]}
workflow:
  - step: start
    loop: {in: "{{ items }}", iterator: x}
    tool: {kind: python, input: {x: "{{ iter.x }}"}, code: "result = x * 10"}
    next: [end]
  - step: end
    tool: {kind: python, input: {n: "{{ start.count }}"}, code: "result = {'n': n}"}
"""


async def _rows(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(str(settings.database_url)) as db:
        cur = await db.execute(sql, params)
        return await cur.fetchall()


async def _entry(flow: Flow, api: httpx.AsyncClient) -> dict[str, Any]:
    await register(api, CHAIN)
    return await flow.playbooks.resolve(path="tests/started-together")


async def test_executions_started_together_share_one_transaction(settings: Settings) -> None:
    async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        flow = orchestrator_of(rt).flow
        entry = await _entry(flow, api)
        payloads = [{"items": list(range(n))} for n in range(12)]  # the first: an empty loop
        ids = await asyncio.gather(*(flow.execute(entry, payload) for payload in payloads))
        assert len(set(ids)) == len(ids)
        # events are never updated: the transaction that inserted them is still theirs
        (transactions,) = await _rows(
            settings,
            "SELECT count(DISTINCT xmin::text) FROM noetl.event"
            " WHERE event_type = 'playbook.initialized' AND execution_id = ANY(%s)",
            list(ids),
        )
        assert transactions == (1,)
        for execution_id, payload in zip(ids, payloads, strict=True):
            body = await wait_for_end(api, str(execution_id))
            assert body["status"] == "COMPLETED", body
            assert body["result"] == {"n": len(payload["items"])}
        events = await _rows(
            settings,
            "SELECT event_type FROM noetl.event WHERE execution_id = %s ORDER BY event_id",
            ids[0],
        )
        assert [e for (e,) in events][:2] == ["playbook.initialized", "step.enter"]


async def test_a_started_execution_is_held_at_its_rows_version(settings: Settings) -> None:
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        flow = orchestrator_of(rt).flow
        entry = await _entry(flow, api)
        execution_id = await flow.execute(entry, {"items": [1]})
        held = flow.states.get(execution_id)
        assert held is not None and held.version == 1
        assert [ref.step for ref in held.state.commands.values()] == ["start"]
        rows = await _rows(
            settings,
            "SELECT status, state_version, state, deadline IS NULL"
            " FROM noetl.execution WHERE execution_id = %s",
            execution_id,
        )
        assert rows == [("RUNNING", 1, held.state.to_json(), True)]


async def test_a_start_that_cannot_be_written_fails_alone(settings: Settings) -> None:
    async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        flow = orchestrator_of(rt).flow
        entry = await _entry(flow, api)
        good = await flow._first(entry, {"items": [1]})
        bad = await flow._first(entry, {"items": [2]})
        # no such catalog entry: its row breaks the foreign key, and with it the batch
        bad = dataclasses.replace(bad, entry={**entry, "catalog_id": -1})
        answers = await flow._start_batch([good, bad])
        assert answers[0] == good.execution_id
        assert isinstance(answers[1], psycopg.errors.ForeignKeyViolation)
        body = await wait_for_end(api, str(good.execution_id))
        assert body["status"] == "COMPLETED" and body["result"] == {"n": 1}
        assert flow.states.get(bad.execution_id) is None
        nothing = await _rows(
            settings,
            "SELECT (SELECT count(*) FROM noetl.execution WHERE execution_id = %s),"
            " (SELECT count(*) FROM noetl.event WHERE execution_id = %s),"
            " (SELECT count(*) FROM noetl.command WHERE execution_id = %s)",
            bad.execution_id,
            bad.execution_id,
            bad.execution_id,
        )
        assert nothing == [(0, 0, 0)]
