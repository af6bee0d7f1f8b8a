"""The server killed (SIGKILL) mid-run and started again: the execution carries on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg

from noetl.config import Settings
from noetl.embedded.services import free_port
from noetl.server.snapshots import LOGGED, LOGGED_WORKLOAD
from noetl.worker.worker import Worker
from tests.conftest import event_log, eventually, slow_chain, wait_for_end, wait_healthy
from tests.integration.test_large_results import CHAIN as LARGE_CHAIN


def _server(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "NOETL_DATABASE_URL": settings.require_database_url(),
        "NATS_URL": settings.require_nats_url(),
        "SERVER_API_URL": f"http://127.0.0.1:{port}",
        "NOETL_SERVER_PORT": str(port),
        "NOETL_NATS_STREAM": settings.stream,
        "NOETL_NATS_SUBJECT": settings.subject,
        "NOETL_NATS_CONSUMER": settings.consumer,
        "NOETL_RELAY_INTERVAL": "0.2",
        "NOETL_RELAY_AFTER": "1",
        "NOETL_HOME": str(settings.home),
        "NOETL_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "noetl.cli.main", "server", "start"], env=env)


async def _killed_while(
    settings: Settings, body: dict[str, Any], step: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start an execution, SIGKILL the server once a command (of `step`) is claimed, start
    it again; the execution as it ended, and its events."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _server(settings, port)
    worker = Worker(settings.with_(server_url=url, worker_id="survivor"))
    working = asyncio.create_task(worker.run())
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as api:
            await wait_healthy(api)
            execution_id = (await api.post("/api/execute", json=body)).json()["execution_id"]

            async def claimed() -> bool:
                return any(
                    e["event_type"] == "command.claimed" and step in (None, e["step"])
                    for e in await event_log(api, execution_id)
                )

            await eventually(claimed)
            server.send_signal(signal.SIGKILL)  # the step is running on the worker
            server.wait(10)
            await asyncio.sleep(0.5)
            server = _server(settings, port)
            await wait_healthy(api)
            execution = await wait_for_end(api, execution_id, timeout=90)
            return execution, await event_log(api, execution_id)
    finally:
        worker.stop()
        await working
        server.terminate()
        server.wait(15)


async def test_a_killed_server_restarted_continues_the_execution(settings: Settings) -> None:
    execution, events = await _killed_while(settings, {"playbook": slow_chain(1.0)})
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == 3
    kinds = [e["event_type"] for e in events]
    assert kinds.count("command.completed") == 3


async def test_a_restarted_server_reads_large_values_back_from_the_log(settings: Settings) -> None:
    """A large step result and payload are in the log, named by the snapshot
    (server.snapshots): the server started again reads them back for the next steps."""
    body = {"playbook": LARGE_CHAIN, "payload": {"ids": list(range(2000))}}
    execution, _ = await _killed_while(settings, body, step="wait")  # after start's result
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {"length": 20000, "w": 2, "ids": 2000, "tag": "t42"}
    with psycopg.connect(settings.require_database_url()) as db:
        row = db.execute(
            "SELECT state FROM noetl.execution WHERE execution_id = %s",
            (int(execution["execution_id"]),),
        ).fetchone()
    assert row is not None and set(row[0][LOGGED]) == {"start"} and LOGGED_WORKLOAD in row[0]


async def test_a_step_that_finishes_while_the_server_is_down_for_20_s_runs_once(
    settings: Settings, tmp_path: Path
) -> None:
    """The worker keeps the finished outcome and retries its report (with backoff, holding
    the NATS message in progress) until the server is back: the run completes, each step ran
    once. Before: 5 tries in ~6 s, then the outcome was dropped and the step ran again."""
    marker = tmp_path / "runs"
    playbook = f"""
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: outage, path: tests/outage}}
workflow:
  - step: start
    tool:
      kind: python
      code: |
        import time
        with open({str(marker)!r}, "a") as f:
            f.write("start\\n")
        time.sleep(2)
        result = 1
    next: [end]
  - step: end
    tool: {{kind: python, input: {{x: "{{{{ start }}}}"}}, code: "result = x + 1"}}
"""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _server(settings, port)
    worker = Worker(settings.with_(server_url=url, worker_id="patient"))
    working = asyncio.create_task(worker.run())
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as api:
            await wait_healthy(api)
            started = (await api.post("/api/execute", json={"playbook": playbook})).json()
            execution_id = started["execution_id"]

            async def running() -> bool:
                return marker.exists()

            await eventually(running)  # the step is running on the worker
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            await asyncio.sleep(20.0)  # the outage: the step finishes meanwhile
            server = _server(settings, port)
            await wait_healthy(api)
            execution = await wait_for_end(api, execution_id, timeout=120)
            assert execution["status"] == "COMPLETED", execution["error"]
            assert execution["result"] == 2
            assert marker.read_text().splitlines() == ["start"]
            kinds = [e["event_type"] for e in await event_log(api, execution_id)]
            assert kinds.count("command.claimed") == 2 and kinds.count("command.completed") == 2
    finally:
        worker.stop()
        await working
        server.terminate()
        server.wait(15)
