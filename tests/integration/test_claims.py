"""Claims are atomic: one live attempt per command, duplicates run the tool once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import nats

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.protocol.message import CommandMessage
from noetl.worker.worker import Worker
from tests.conftest import event_log, eventually, wait_for_end

APPEND = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: append, path: tests/append}
workload: {marker: ""}
workflow:
  - step: start
    tool:
      kind: python
      input: {marker: "{{ marker }}"}
      code: |
        with open(marker, "a") as f:
            f.write("ran\\n")
        result = {"ok": True}
"""


async def _issued(client: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    events = await event_log(client, execution_id)
    [issued] = [e for e in events if e["event_type"] == "command.issued"]
    return issued


async def test_twenty_concurrent_claims_exactly_one_wins(
    settings: Settings, tmp_path: Path
) -> None:
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = await api.post(
            "/api/execute", json={"playbook": APPEND, "payload": {"marker": str(tmp_path / "m")}}
        )
        issued = await _issued(api, started.json()["execution_id"])
        claims = await asyncio.gather(
            *[
                api.post(f"/api/commands/{issued['event_id']}/claim", json={"worker_id": f"w{i}"})
                for i in range(20)
            ]
        )
        codes = sorted(r.status_code for r in claims)
        assert codes == [200] + [409] * 19
        winner = next(r.json() for r in claims if r.status_code == 200)
        assert winner["attempt"] == 1 and winner["tool"]["kind"] == "python"
        events = await event_log(api, started.json()["execution_id"])
        assert [e["event_type"] for e in events].count("command.claimed") == 1


async def test_claim_through_post_events_is_the_same_atomic_claim(
    settings: Settings, tmp_path: Path
) -> None:
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (
            await api.post(
                "/api/execute",
                json={"playbook": APPEND, "payload": {"marker": str(tmp_path / "m")}},
            )
        ).json()
        issued = await _issued(api, started["execution_id"])
        body = {
            "execution_id": started["execution_id"],
            "event_type": "command.claimed",
            "event_id": issued["event_id"],
            "worker_id": "a",
        }
        first = await api.post("/api/events", json=body)
        second = await api.post("/api/events", json={**body, "worker_id": "b"})
        assert (first.status_code, second.status_code) == (200, 409)
        fetched = (await api.get(f"/api/commands/{issued['event_id']}")).json()
        assert (fetched["status"], fetched["worker_id"], fetched["attempt"]) == ("CLAIMED", "a", 1)


async def test_same_message_delivered_twice_runs_the_tool_once(
    settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "runs.txt"
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (
            await api.post(
                "/api/execute", json={"playbook": APPEND, "payload": {"marker": str(marker)}}
            )
        ).json()
        issued = await _issued(api, started["execution_id"])
        nc = await nats.connect(settings.require_nats_url())
        duplicate = CommandMessage(
            int(started["execution_id"]),
            int(issued["event_id"]),
            issued["command_id"],
            "start",
            rt.url,
        )
        await nc.jetstream().publish(
            settings.subject, duplicate.encode(), headers={"Nats-Msg-Id": "a-second-delivery"}
        )
        await nc.close()
        worker = Worker(rt.settings.with_(worker_id="dup-worker"))
        working = asyncio.create_task(worker.run())
        try:
            execution = await wait_for_end(api, started["execution_id"])
            # both deliveries have been handled once the stream has no pending messages
            nc = await nats.connect(settings.require_nats_url())
            js = nc.jetstream()

            async def drained() -> bool:
                info = await js.consumer_info(settings.stream, settings.consumer)
                return bool(info.num_pending == 0 and info.num_ack_pending == 0)

            await eventually(drained)
            # the second delivery's claim got 409 (already completed): acked, never redelivered
            info = await js.consumer_info(settings.stream, settings.consumer)
            assert info.num_redelivered == 0
            await nc.close()
        finally:
            worker.stop()
            await working
        assert execution["status"] == "COMPLETED"
        assert marker.read_text() == "ran\n"
        events = await event_log(api, started["execution_id"])
        assert [e["event_type"] for e in events].count("command.claimed") == 1


async def test_a_command_whose_every_attempt_is_lost_fails_with_worker_lost(
    settings: Settings, tmp_path: Path
) -> None:
    """The claim's attempt bound: attempt 1 and 2 are taken as their leases lapse, never a
    third; the command then fails `worker_lost` and so does the execution."""
    settings = settings.with_(lease_seconds=0.3, max_attempts=2)
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (
            await api.post(
                "/api/execute",
                json={"playbook": APPEND, "payload": {"marker": str(tmp_path / "m")}},
            )
        ).json()
        issued = await _issued(api, started["execution_id"])
        url = f"/api/commands/{issued['event_id']}/claim"
        first = await api.post(url, json={"worker_id": "lost-1"})
        assert first.status_code == 200 and first.json()["attempt"] == 1

        async def claimed_again() -> httpx.Response | None:
            answer = await api.post(url, json={"worker_id": "lost-2"})
            return answer if answer.status_code == 200 else None

        second = await eventually(claimed_again)
        assert second.json()["attempt"] == 2

        async def refused_for_good() -> httpx.Response | None:
            answer = await api.post(url, json={"worker_id": "lost-3"})
            assert answer.status_code != 200, answer.text  # never a third attempt
            text = answer.json()["message"]
            return answer if "no attempts left" in text or "already FAILED" in text else None

        third = await eventually(refused_for_good)
        assert third.status_code == 409
        execution = await wait_for_end(api, started["execution_id"])
        events = await event_log(api, started["execution_id"])
    assert execution["status"] == "FAILED" and "worker_lost" in execution["error"]
    claims = [e for e in events if e["event_type"] == "command.claimed"]
    assert [(e["attempt"], e["worker_id"]) for e in claims] == [(1, "lost-1"), (2, "lost-2")]
    [failed] = [e for e in events if e["event_type"] == "command.failed"]
    assert failed["attempt"] == 2 and failed["error"].startswith("worker_lost: no result after 2")
    assert "ran out of memory" in failed["error"]  # what may have happened, for the operator
    # an arc on call.error can route it: output.error.kind == 'worker_lost'
    assert failed["payload"]["error_fields"] == {"kind": "worker_lost", "retryable": False}
