"""Kill-to-resume: how long a SIGKILLed worker's step waits before another worker takes it.

Embedded PostgreSQL + NATS, one `noetl server start`, two `noetl worker start` processes. Each
round starts a playbook whose step sleeps, waits for its claim, SIGKILLs the worker holding it
and measures the time until the `command.claimed` of attempt 2 (on the other worker); then it
cancels the run and starts a replacement worker. Prints each round and the median.

    .venv/bin/python -m benchmarks.recovery [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import _wait_healthy, _wait_workers
from noetl.embedded.services import EmbeddedNats, EmbeddedPostgres, free_port

PLAYBOOK = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: recovery, path: bench/recovery}
workflow:
  - step: start
    tool: {kind: python, code: "import time; time.sleep(60); result = 1"}
"""


def _claims(client: httpx.Client, execution_id: str, skip: int = 0) -> list[dict[str, Any]]:
    items = client.get(f"/api/executions/{execution_id}/events").json()["items"]
    return [e for e in items if e["event_type"] == "command.claimed"][skip:]


def _poll(check: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError("timed out")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="noetl-recovery-") as tmp:
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
            "NOETL_HOME": tmp,
        }
        command = [sys.executable, "-m", "noetl.cli.main"]
        server = subprocess.Popen([*command, "server", "start"], env=env)
        workers: dict[str, subprocess.Popen[bytes]] = {}
        serial = 0

        def start_worker() -> None:
            nonlocal serial
            serial += 1
            name = f"recovery-{serial}"
            workers[name] = subprocess.Popen(
                [*command, "worker", "start"], env={**env, "NOETL_WORKER_ID": name}
            )

        resumes: list[float] = []
        try:
            _wait_healthy(url)
            start_worker()
            start_worker()
            _wait_workers(url, 2)
            with httpx.Client(base_url=url, timeout=30) as client:
                for round_ in range(1, args.rounds + 1):
                    started = client.post("/api/execute", json={"playbook": PLAYBOOK}).json()
                    execution_id = started["execution_id"]
                    [first] = _poll(partial(_claims, client, execution_id))
                    victim = workers.pop(first["worker_id"])
                    time.sleep(1.0)  # the step is running on the victim
                    killed = time.time()
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    second = _poll(partial(_claims, client, execution_id, 1))[0]
                    resumed = datetime.fromisoformat(second["created_at"]).timestamp()
                    resumes.append(resumed - killed)
                    print(
                        f"round {round_}: killed {first['worker_id']}, attempt"
                        f" {second['attempt']} on {second['worker_id']} after"
                        f" {resumes[-1]:.1f} s",
                        flush=True,
                    )
                    client.post(f"/api/executions/{execution_id}/cancel")
                    start_worker()
                    _wait_workers(url, 2)
            print(
                f"kill-to-resume over {len(resumes)} kills: median"
                f" {statistics.median(resumes):.1f} s, min {min(resumes):.1f} s,"
                f" max {max(resumes):.1f} s",
                flush=True,
            )
        finally:
            for process in [*workers.values(), server]:
                process.terminate()
            for process in [*workers.values(), server]:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            nats.stop()
            pg.stop()


if __name__ == "__main__":
    main()
