"""Chaos: N executions of a multi-step playbook while everything around them fails.

Embedded PostgreSQL and NATS, one `noetl server start` and three `noetl worker start`
processes. While the executions run, a schedule of faults, one after the other:

    SIGKILL a random worker (a fresh one replaces it)   x3
    SIGKILL the server, start it again after 1 s
    stop NATS for 20 s, start it again
    restart PostgreSQL (stop, start on the same data)

Each step appends a line to a file named for its execution and step, so a step that ran twice
is seen whatever the event log says. Printed at the end: completed, failed, stuck (not
terminal 60 s after the last fault), duplicate outcomes per command and attempt (must be 0),
steps whose side effect ran more than once (a re-run after a kill is at-least-once: counted,
not hidden), and for each worker kill the time until its step was claimed again.

    .venv/bin/python -m benchmarks.chaos [--executions 30] [--steps 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg

from benchmarks.common import _wait_healthy, _wait_workers
from noetl.embedded.services import EmbeddedNats, EmbeddedPostgres, free_port

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def playbook(steps: int, marks: Path) -> str:
    lines = [
        "apiVersion: noetl.io/v2",
        "kind: Playbook",
        "metadata: {name: chaos, path: bench/chaos}",
        "workload: {n: 0}",
        "workflow:",
    ]
    for index in range(steps):
        name = "start" if index == 0 else f"s{index}"
        previous = "n" if index == 0 else f"s{index - 1}" if index > 1 else "start"
        lines += [
            f"  - step: {name}",
            "    tool:",
            "      kind: python",
            f'      input: {{x: "{{{{ {previous} }}}}", eid: "{{{{ execution_id }}}}"}}',
            "      code: |",
            "        import time",
            f"        with open('{marks}/' + str(eid) + '.{name}', 'a') as f:",
            "            f.write('ran\\n')",
            "        time.sleep(1.5)",
            "        result = int(x) + 1",
        ]
        if index < steps - 1:
            lines.append(f"    next: [s{index + 1}]")
    return "\n".join(lines) + "\n"


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pg = EmbeddedPostgres.start(root / "pg")
        self.nats = EmbeddedNats.start(root / "nats")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "NOETL_DATABASE_URL": self.pg.url,
            "NATS_URL": self.nats.url,
            "SERVER_API_URL": self.url,
            "NOETL_SERVER_PORT": str(port),
            "NOETL_LOG_LEVEL": "WARNING",
            "NOETL_HOME": str(root),
            "NOETL_WORKER_CONCURRENCY": "8",
        }
        self.command = [sys.executable, "-m", "noetl.cli.main"]
        self.server = self._spawn("server")
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.serial = 0
        self.lock = threading.Lock()

    def _spawn(self, what: str, **extra: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"{what}-{extra.get('NOETL_WORKER_ID', 'server')}.log").open("ab")
        return subprocess.Popen(
            [*self.command, what, "start"], env={**self.env, **extra}, stderr=log, stdout=log
        )

    def add_worker(self) -> None:
        with self.lock:
            self.serial += 1
            name = f"chaos-{self.serial}"
            self.workers[name] = self._spawn("worker", NOETL_WORKER_ID=name)

    def kill_worker(self) -> tuple[str, float]:
        with self.lock:
            name = random.choice(sorted(self.workers))
            victim = self.workers.pop(name)
        killed = time.time()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        return name, killed

    def kill_server(self) -> None:
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()
        time.sleep(1.0)
        self.server = self._spawn("server")

    def stop(self) -> None:
        for process in [self.server, *self.workers.values()]:
            process.terminate()
        for process in [self.server, *self.workers.values()]:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.nats.stop()
        self.pg.stop()


def faults(cluster: Cluster, kills: list[tuple[str, float]], log: list[str]) -> None:
    def note(text: str) -> None:
        log.append(f"{time.strftime('%H:%M:%S')} {text}")
        print(log[-1], flush=True)

    schedule = ["worker", "server", "worker", "nats", "worker", "postgres"]
    for fault in schedule:
        time.sleep(6.0)
        if fault == "worker":
            name, killed = cluster.kill_worker()
            kills.append((name, killed))
            note(f"SIGKILL worker {name}")
            cluster.add_worker()
        elif fault == "server":
            note("SIGKILL server; restart in 1 s")
            cluster.kill_server()
        elif fault == "nats":
            note("NATS stopped for 20 s")
            cluster.nats.stop()
            time.sleep(20.0)
            cluster.nats.restart()
            note("NATS started again")
        elif fault == "postgres":
            note("PostgreSQL restart")
            cluster.pg.stop()
            cluster.pg = EmbeddedPostgres.start(cluster.root / "pg")


def report(cluster: Cluster, ids: list[str], kills: list[tuple[str, float]], marks: Path) -> None:
    with psycopg.connect(cluster.pg.url, autocommit=True) as conn:
        statuses = Counter(
            row[0]
            for row in conn.execute(
                "SELECT status FROM noetl.execution WHERE execution_id = ANY(%s)",
                ([int(i) for i in ids],),
            ).fetchall()
        )
        duplicates = conn.execute(
            "SELECT count(*) FROM (SELECT execution_id, command_id, attempt FROM noetl.event"
            " WHERE event_type IN ('command.completed', 'command.failed')"
            " GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
        ).fetchone()
        outcomes = conn.execute(
            "SELECT count(*) FROM (SELECT execution_id, command_id FROM noetl.event"
            " WHERE event_type IN ('command.completed', 'command.failed')"
            " GROUP BY 1, 2 HAVING count(*) > 1) d"
        ).fetchone()
        attempts = Counter(
            row[0]
            for row in conn.execute(
                "SELECT max(attempt) FROM noetl.event WHERE event_type = 'command.claimed'"
                " GROUP BY execution_id, command_id"
            ).fetchall()
        )
        resumes = []
        for name, killed in kills:
            row = conn.execute(
                "SELECT min(e2.created_at) FROM noetl.event e1 JOIN noetl.event e2"
                " ON e2.execution_id = e1.execution_id AND e2.command_id = e1.command_id"
                " AND e2.event_type = 'command.claimed' AND e2.attempt = e1.attempt + 1"
                " WHERE e1.event_type = 'command.claimed' AND e1.worker_id = %s",
                (name,),
            ).fetchone()
            if row and row[0]:
                resumes.append((name, row[0].timestamp() - killed))
    runs = Counter(len(path.read_text().splitlines()) for path in marks.iterdir())
    print()
    print(f"executions: {len(ids)}: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    stuck = len(ids) - sum(statuses[s] for s in TERMINAL)
    print(f"stuck 60 s after the last fault: {stuck}")
    print(f"duplicate outcomes per command and attempt: {duplicates[0] if duplicates else '?'}")
    print(f"commands with more than one outcome: {outcomes[0] if outcomes else '?'}")
    print(f"claims per command (attempts): {dict(sorted(attempts.items()))}")
    print(f"step side effects by times run: {dict(sorted(runs.items()))}")
    for name, seconds in resumes:
        print(f"worker {name} killed: its step claimed again after {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executions", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="noetl-chaos-") as tmp:
        root = Path(tmp)
        marks = root / "marks"
        marks.mkdir()
        cluster = Cluster(root)
        ids: list[str] = []
        kills: list[tuple[str, float]] = []
        log: list[str] = []
        try:
            _wait_healthy(cluster.url)
            for _ in range(3):
                cluster.add_worker()
            _wait_workers(cluster.url, 3)
            text = playbook(args.steps, marks)
            with httpx.Client(base_url=cluster.url, timeout=30) as client:
                chaos = threading.Thread(target=faults, args=(cluster, kills, log))
                began = time.monotonic()
                chaos.start()
                _submit(client, text, args.executions, chaos, ids)
                chaos.join()
                print(f"faults done after {time.monotonic() - began:.0f} s", flush=True)
                _settle(client, ids, 60.0)
            report(cluster, ids, kills, marks)
        finally:
            cluster.stop()


def _submit(
    client: httpx.Client, text: str, count: int, chaos: threading.Thread, ids: list[str]
) -> None:
    """Start `count` executions spread over the fault schedule (about 70 s), each retried
    until the server accepts it (it may be down)."""
    for _ in range(count):
        while True:
            try:
                started = client.post("/api/execute", json={"playbook": text})
            except httpx.HTTPError:
                started = None
            if started is not None and started.status_code == 201:
                ids.append(started.json()["execution_id"])
                break
            time.sleep(0.5)
        if chaos.is_alive():
            time.sleep(70.0 / count)


def _settle(client: httpx.Client, ids: list[str], grace: float) -> None:
    deadline = time.monotonic() + grace
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for execution_id in list(pending):
            with contextlib.suppress(httpx.HTTPError):
                body: dict[str, Any] = client.get(f"/api/executions/{execution_id}").json()
                if body.get("status") in TERMINAL:
                    pending.discard(execution_id)
        time.sleep(0.5)


if __name__ == "__main__":
    main()
