"""A bug while handling one command costs that command a redelivery, never a worker slot."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.protocol.command import ClaimedCommand
from noetl.protocol.message import CommandMessage
from noetl.protocol.outcome import Outcome
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


class BuggyOnce(Worker):
    """Fails inside its own handling code the first time, as a bug would."""

    crashed = False

    async def _run_with_keepalive(
        self, msg: Any, ref: CommandMessage, command: ClaimedCommand
    ) -> Outcome | None:
        if not BuggyOnce.crashed:
            BuggyOnce.crashed = True
            raise RuntimeError("a bug in the worker")
        return await super()._run_with_keepalive(msg, ref, command)


async def test_a_worker_bug_naks_the_message_and_keeps_the_slot(settings: Settings) -> None:
    settings = settings.with_(worker_concurrency=1, lease_seconds=1.0)
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        worker = BuggyOnce(rt.settings.with_(worker_id="buggy"))
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


class StoppedWhileClaiming(Worker):
    """stop() arrives while a fetched batch is being claimed."""

    async def _take(self, msgs: Any, pending: Any) -> None:
        self.stop()
        await asyncio.sleep(0.3)
        await super()._take(msgs, pending)


async def test_a_worker_stopping_mid_claim_finishes_the_work_it_claimed(
    settings: Settings,
) -> None:
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": ONE_STEP})).json()
        worker = StoppedWhileClaiming(rt.settings.with_(worker_id="stopping"))
        await asyncio.wait_for(worker.run(), 60)  # returns only when its work is done
        execution = (await api.get(f"/api/executions/{started['execution_id']}")).json()
    assert execution["status"] == "COMPLETED"
    assert worker.held == 0
