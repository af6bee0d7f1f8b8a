"""Shared helpers: start real PostgreSQL + NATS (embedded), a server process and workers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from noetl.embedded.services import EmbeddedNats, EmbeddedPostgres, free_port

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def cluster(workers: int = 1, concurrency: int = 8) -> Iterator[str]:
    """Embedded PostgreSQL + NATS, one `noetl server start` and `workers` worker processes."""
    with stack(workers, concurrency) as (url, _):
        yield url


@contextlib.contextmanager
def stack(workers: int = 1, concurrency: int = 8) -> Iterator[tuple[str, str]]:
    """`cluster`, yielding the server's URL and the database URL (to read the event log)."""
    with tempfile.TemporaryDirectory(prefix="noetl-bench-") as tmp:
        pg = EmbeddedPostgres.start(Path(tmp) / "pg")
        nats = EmbeddedNats.start(Path(tmp) / "nats")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "NOETL_DATABASE_URL": pg.url,
            "NATS_URL": nats.url,
            "SERVER_API_URL": url,
            "NOETL_SERVER_PORT": str(port),
            "NOETL_LOG_LEVEL": "WARNING",
            "NOETL_WORKER_CONCURRENCY": str(concurrency),
        }
        command = [sys.executable, "-m", "noetl.cli.main"]
        processes = [subprocess.Popen([*command, "server", "start"], env=env)]
        try:
            _wait_healthy(url)
            processes += [
                subprocess.Popen(
                    [*command, "worker", "start"], env={**env, "NOETL_WORKER_ID": f"bench-{i}"}
                )
                for i in range(workers)
            ]
            _wait_workers(url, workers)
            yield url, pg.url
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in processes:
                process.wait(30)
            nats.stop()
            pg.stop()


def _wait_healthy(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health").status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("server did not become healthy")


def _wait_workers(url: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        items = httpx.get(f"{url}/api/workers").json()["items"]
        if sum(w["status"] == "ready" for w in items) >= count:
            time.sleep(0.5)  # let the pull subscriptions settle
            return
        time.sleep(0.1)
    raise RuntimeError("workers did not register")


def run_to_end(
    client: httpx.Client, body: dict[str, object], timeout: float = 600
) -> dict[str, object]:
    started = client.post("/api/execute", json=body)
    started.raise_for_status()
    execution_id = started.json()["execution_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = client.get(f"/api/executions/{execution_id}").json()
        if execution["status"] != "RUNNING":
            return dict(execution)
        time.sleep(0.05)
    raise RuntimeError("execution did not finish")
