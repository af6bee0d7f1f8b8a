"""A server and two workers started by hand, as separate processes, run a playbook."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from noetl.config import Settings
from noetl.embedded.services import free_port
from tests.conftest import eventually, wait_healthy

ROOT = Path(__file__).resolve().parents[2]


def _env(settings: Settings, server_url: str, port: int, worker_id: str = "") -> dict[str, str]:
    return {
        **os.environ,
        "NOETL_DATABASE_URL": settings.require_database_url(),
        "NATS_URL": settings.require_nats_url(),
        "SERVER_API_URL": server_url,
        "NOETL_SERVER_PORT": str(port),
        "NOETL_NATS_STREAM": settings.stream,
        "NOETL_NATS_SUBJECT": settings.subject,
        "NOETL_NATS_CONSUMER": settings.consumer,
        "NOETL_WORKER_ID": worker_id or "unused",
        "NOETL_LOG_LEVEL": "WARNING",
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noetl.cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "noetl.cli.main", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def cluster(
    settings: Settings,
) -> Iterator[tuple[str, dict[str, str], list[subprocess.Popen[str]]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(settings, url, port)
    init = _cli(env, "db", "init")
    assert init.returncode == 0, init.stderr
    processes = [_spawn(["server", "start"], env)]
    processes += [
        _spawn(["worker", "start", "--concurrency", "2"], _env(settings, url, port, f"hand-{i}"))
        for i in (1, 2)
    ]
    yield url, env, processes
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


async def test_server_and_two_workers_run_a_playbook_through_the_api(
    cluster: tuple[str, dict[str, str], list[subprocess.Popen[str]]],
) -> None:
    url, env, processes = cluster
    async with httpx.AsyncClient(base_url=url, timeout=10) as api:
        await wait_healthy(api)
        registered = _cli(env, "register", "examples/hello.yaml")
        assert registered.returncode == 0, registered.stdout + registered.stderr
        executed = _cli(
            env, "execute", "examples/hello", "--wait", "--payload", '{"message": "hello"}'
        )
        assert executed.returncode == 0, executed.stdout + executed.stderr
        assert "COMPLETED" in executed.stdout and "HELLO world" in executed.stdout
        execution_id = executed.stdout.split("execution ", 1)[1].split()[0]
        for command, expected in (
            ("status", '"status": "COMPLETED"'),
            ("events", "playbook.completed"),
        ):
            shown = _cli(env, command, execution_id)
            assert shown.returncode == 0, shown.stderr
            assert expected in shown.stdout

        async def both_workers() -> list[str]:
            items = (await api.get("/api/workers")).json()["items"]
            ready = sorted(w["worker_id"] for w in items if w["status"] == "ready")
            return ready if ready == ["hand-1", "hand-2"] else []

        await eventually(both_workers, timeout=30)
        for worker in processes[1:]:
            worker.send_signal(signal.SIGTERM)
        for worker in processes[1:]:
            assert worker.wait(20) == 0

        async def stopped() -> bool:
            items = (await api.get("/api/workers")).json()["items"]
            return all(w["status"] == "stopped" for w in items)

        await eventually(stopped, timeout=10)
