"""A worker that stops heartbeating is dead: its claims are released long before their lease
ends; a live worker on a long step keeps heartbeating and keeps its claim."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from noetl.config import Settings
from noetl.embedded.runtime import running
from tests.conftest import event_log, eventually, wait_for_end
from tests.hardening.test_attempts import ONE_STEP, _sql

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


async def test_a_lapsed_claim_its_live_worker_does_not_list_is_relayed_one_it_lists_is_kept(
    settings: Settings,
) -> None:
    """Regression (issue 12, continuation): the server claims the next command for the worker
    whose report decided it and hands it over in the report's answer. When that answer was
    lost, the worker, alive and heartbeating, never learned of the claim: it neither ran nor
    renewed it, and the relay kept a live worker's lapsed claim forever (the execution stayed
    RUNNING). Now a heartbeat lists the commands the worker holds."""
    settings = settings.with_(
        lease_seconds=1.0, heartbeat_seconds=0.2, worker_dead_after=2.0, relay_after=0.3
    )
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        lost: list[int] = []
        held: list[int] = []
        for ghost, kept in (("forgetful", lost), ("holder", held)):
            started = (await api.post("/api/execute", json={"playbook": ONE_STEP})).json()
            [issued] = [
                e
                for e in await event_log(api, started["execution_id"])
                if e["event_type"] == "command.issued"
            ]
            claim = await api.post(
                f"/api/commands/{issued['event_id']}/claim", json={"worker_id": ghost}
            )
            assert claim.status_code == 200, claim.text
            kept.append(int(issued["event_id"]))

        async def heartbeats() -> None:  # both stay alive; only the holder lists its claim
            while True:
                for ghost, listed in (("forgetful", []), ("holder", held)):
                    beat = {"worker_id": ghost, "commands": listed}
                    assert (await api.post("/api/workers/heartbeat", json=beat)).is_success
                await asyncio.sleep(0.2)

        beating = asyncio.create_task(heartbeats())
        try:

            async def republished_twice() -> bool:
                row = _sql(settings, PUBLISHES, lost[0])
                return bool(row[0] >= 3)  # issued once, then relayed at two passes

            await eventually(republished_twice, timeout=60)
            assert _sql(settings, PUBLISHES, held[0])[0] == 1  # published when issued only
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating


PUBLISHES = "SELECT publish_count FROM noetl.command WHERE event_id = %s"


async def test_a_worker_lists_the_command_it_runs_in_its_heartbeat(settings: Settings) -> None:
    settings = settings.with_(heartbeat_seconds=0.2)
    async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": LONG})).json()

        async def issued() -> int | None:
            for e in await event_log(api, started["execution_id"]):
                if e["event_type"] == "command.issued":
                    return int(e["event_id"])
            return None

        event_id = await eventually(issued)

        async def listed() -> bool:
            row = _sql(
                settings, "SELECT count(*) FROM noetl.worker WHERE %s = ANY(commands)", event_id
            )
            return bool(row[0])

        await eventually(listed)
        execution = await wait_for_end(api, started["execution_id"], timeout=60)
        assert execution["status"] == "COMPLETED", execution["error"]
