"""A worker killed mid-step: the command is redelivered, claimed as attempt 2, and completes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.worker.worker import Worker
from tests.conftest import event_log, eventually, wait_for_end

SLOW_ONCE = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: slow_once, path: tests/slow_once}
workload: {marker: ""}
workflow:
  - step: start
    tool:
      kind: python
      input: {marker: "{{ marker }}"}
      code: |
        import os, time
        first = not os.path.exists(marker)
        with open(marker, "a") as f:
            f.write("run\\n")
        if first:
            time.sleep(120)   # the first attempt never finishes: its worker is killed
        result = {"attempt_ran": "second"}
"""


def _worker_process(settings: Settings, server_url: str, worker_id: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NATS_URL": settings.require_nats_url(),
        "SERVER_API_URL": server_url,
        "NOETL_NATS_STREAM": settings.stream,
        "NOETL_NATS_SUBJECT": settings.subject,
        "NOETL_NATS_CONSUMER": settings.consumer,
        "NOETL_WORKER_ID": worker_id,
        "NOETL_LEASE_SECONDS": str(settings.lease_seconds),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "noetl.cli.main", "worker", "start", "--concurrency", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_killed_worker_command_is_redelivered_and_completes_as_attempt_two(
    settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "runs.txt"
    settings = settings.with_(lease_seconds=2.0)
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        victim = _worker_process(settings, rt.url, "victim")
        try:
            started = (
                await api.post(
                    "/api/execute", json={"playbook": SLOW_ONCE, "payload": {"marker": str(marker)}}
                )
            ).json()
            execution_id = started["execution_id"]
            await eventually(lambda: asyncio.sleep(0, marker.exists()), timeout=30)
        finally:
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
        rescuer = Worker(rt.settings.with_(worker_id="rescuer"))
        working = asyncio.create_task(rescuer.run())
        try:
            execution = await wait_for_end(api, execution_id, timeout=60)
        finally:
            rescuer.stop()
            await working
        assert execution["status"] == "COMPLETED", execution
        assert execution["result"] == {"attempt_ran": "second"}
        assert marker.read_text() == "run\nrun\n"
        events = await event_log(api, execution_id)
        claims = [
            (e["attempt"], e["worker_id"]) for e in events if e["event_type"] == "command.claimed"
        ]
        assert claims == [(1, "victim"), (2, "rescuer")]
        outcomes = [e for e in events if e["event_type"] == "command.completed"]
        assert [e["attempt"] for e in outcomes] == [2]

        late = await api.post(
            "/api/events",
            json={
                "execution_id": execution_id,
                "event_type": "command.completed",
                "command_id": outcomes[0]["command_id"],
                "attempt": 1,
                "worker_id": "victim",
                "result": {"late": True},
            },
        )
        assert late.status_code == 409
        assert "already COMPLETED" in late.json()["message"]
        after = await event_log(api, execution_id)
        assert len(after) == len(events)


async def test_a_late_report_of_a_superseded_attempt_counts_once(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.with_(lease_seconds=0.5)
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (
            await api.post(
                "/api/execute",
                json={"playbook": SLOW_ONCE, "payload": {"marker": str(tmp_path / "m")}},
            )
        ).json()
        events = await event_log(api, started["execution_id"])
        [issued] = [e for e in events if e["event_type"] == "command.issued"]
        claim_url = f"/api/commands/{issued['event_id']}/claim"
        first = await api.post(claim_url, json={"worker_id": "slow"})
        assert first.json()["attempt"] == 1

        async def second_claim() -> httpx.Response | None:
            response = await api.post(claim_url, json={"worker_id": "fast"})
            return response if response.status_code == 200 else None

        second = await eventually(second_claim, timeout=10)  # after the 0.5 s lease expired
        assert second.json()["attempt"] == 2
        report = {
            "execution_id": started["execution_id"],
            "event_type": "command.completed",
            "command_id": issued["command_id"],
            "worker_id": "slow",
            "result": {},
        }
        # attempt 1 finished while attempt 2 runs: no attempt has an outcome yet, so the work
        # done is kept (issue 8 §4); attempt 2's report then finds it recorded
        late = await api.post("/api/events", json={**report, "attempt": 1})
        assert late.status_code == 200, late.text
        second_report = await api.post(
            "/api/events", json={**report, "attempt": 2, "worker_id": "fast"}
        )
        assert second_report.status_code == 409
        assert "already COMPLETED" in second_report.json()["message"]
        future = await api.post("/api/events", json={**report, "attempt": 3})
        assert future.status_code == 409
        execution = await wait_for_end(api, started["execution_id"])
        assert execution["status"] == "COMPLETED"
        kinds = [e["event_type"] for e in await event_log(api, started["execution_id"])]
        assert kinds.count("command.completed") == 1
