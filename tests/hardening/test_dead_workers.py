"""A worker that stops heartbeating is dead: its claims are released long before their lease
ends; a live worker on a long step keeps heartbeating and keeps its claim."""

from __future__ import annotations

import httpx

from noetl.config import Settings
from noetl.embedded.runtime import running
from tests.conftest import event_log, wait_for_end

LONG = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: long, path: tests/long}
workflow:
  - step: start
    tool: {kind: python, code: "import time; time.sleep(3); result = 'done'"}
"""


async def test_a_silent_workers_claim_is_released_before_its_lease_ends(
    settings: Settings,
) -> None:
    # the lease (10 min) outlives the test's deadline: only the dead-worker rule can free it
    settings = settings.with_(
        lease_seconds=600.0, heartbeat_seconds=0.2, worker_dead_after=1.0, relay_after=0.5
    )
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        beat = await api.post("/api/workers/heartbeat", json={"worker_id": "ghost"})
        assert beat.status_code == 200
        started = (await api.post("/api/execute", json={"playbook": LONG})).json()
        [issued] = [
            e
            for e in await event_log(api, started["execution_id"])
            if e["event_type"] == "command.issued"
        ]
        claim = await api.post(
            f"/api/commands/{issued['event_id']}/claim", json={"worker_id": "ghost"}
        )
        assert claim.status_code == 200  # ... and the ghost never heartbeats again
    async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        execution = await wait_for_end(api, started["execution_id"], timeout=60)
        assert execution["status"] == "COMPLETED", execution["error"]
        claims = [
            (e["worker_id"], e["attempt"])
            for e in await event_log(api, started["execution_id"])
            if e["event_type"] == "command.claimed"
        ]
        assert claims[0] == ("ghost", 1) and len(claims) == 2 and claims[1][1] == 2


async def test_a_live_worker_on_a_long_step_keeps_its_claim(settings: Settings) -> None:
    settings = settings.with_(
        lease_seconds=600.0, heartbeat_seconds=0.2, worker_dead_after=1.0, relay_after=0.5
    )
    async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": LONG})).json()
        execution = await wait_for_end(api, started["execution_id"], timeout=60)
        assert execution["status"] == "COMPLETED", execution["error"]
        kinds = [e["event_type"] for e in await event_log(api, started["execution_id"])]
        assert kinds.count("command.claimed") == 1
