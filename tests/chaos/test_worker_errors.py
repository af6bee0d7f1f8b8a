"""A bug while handling one command costs that command a redelivery, never a worker slot."""

from __future__ import annotations

import asyncio

import httpx

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.worker.client import Response, ServerClient
from noetl.worker.middleware import Job, Middleware, standard
from noetl.worker.worker import Worker
from tests.conftest import wait_for_end

ONE_STEP = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: one, path: tests/one}
workflow:
  - step: start
    tool: {kind: noop, result: {ok: true}}
"""


class BuggyOnce(Middleware):
    """Fails inside the worker's own handling code the first time, as a bug would."""

    crashed = False

    async def before(self, job: Job) -> None:
        if not BuggyOnce.crashed:
            BuggyOnce.crashed = True
            raise RuntimeError("a bug in the worker")


async def test_a_worker_bug_naks_the_message_and_keeps_the_slot(settings: Settings) -> None:
    settings = settings.with_(worker_concurrency=1, lease_seconds=1.0)
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        settings = rt.settings.with_(worker_id="buggy")
        client = ServerClient(settings.server_url)
        middleware = [*standard(client, keepalive=1.0, max_payload_bytes=1 << 20), BuggyOnce()]
        worker = Worker(settings, client=client, middleware=middleware)
        working = asyncio.create_task(worker.run())
        try:
            first = (await api.post("/api/execute", json={"playbook": ONE_STEP})).json()
            second = (await api.post("/api/execute", json={"playbook": ONE_STEP})).json()
            done = [await wait_for_end(api, e["execution_id"], timeout=60) for e in (first, second)]
        finally:
            worker.stop()
            await working
    assert BuggyOnce.crashed
    assert [e["status"] for e in done] == ["COMPLETED", "COMPLETED"]
    assert worker.held == 0


class StopWhileClaiming(ServerClient):
    """A server client through which stop() arrives while a fetched batch is being claimed."""

    worker: Worker

    async def claim_many(self, event_ids: list[int], worker_id: str) -> Response:
        self.worker.stop()
        await asyncio.sleep(0.3)
        return await super().claim_many(event_ids, worker_id)


async def test_a_worker_stopping_mid_claim_finishes_the_work_it_claimed(
    settings: Settings,
) -> None:
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": ONE_STEP})).json()
        settings = rt.settings.with_(worker_id="stopping")
        client = StopWhileClaiming(settings.server_url)
        worker = client.worker = Worker(settings, client=client)
        await asyncio.wait_for(worker.run(), 60)  # returns only when its work is done
        execution = (await api.get(f"/api/executions/{started['execution_id']}")).json()
    assert execution["status"] == "COMPLETED"
    assert worker.held == 0
