"""`noetl ui` browses what `noetl run` left in NOETL_HOME; `noetl run --ui` stays up after
the run. Real processes, the embedded PostgreSQL and NATS, stopped by a signal."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
URL = re.compile(r"(http://127\.0\.0\.1:\d+)/")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"NOETL_DATABASE_URL", "NATS_URL"}}
    env["NOETL_HOME"] = str(home)
    return env


def _noetl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noetl.cli.main", *args],
        env=_env(home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class Process:
    """A `noetl` process whose output lines are read as they come."""

    def __init__(self, home: Path, *args: str) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "noetl.cli.main", *args],
            env=_env(home),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: Queue[str] = Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line)

    def url(self, deadline: float = 120) -> str:
        """The base URL from the first line that prints one."""
        while True:
            try:
                line = self.lines.get(timeout=deadline)
            except Empty:
                raise AssertionError(f"no URL printed; output so far: {self.seen}") from None
            self.seen.append(line)
            found = URL.search(line)
            if found:
                return found[1]

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.popen.send_signal(sig)
        return self.popen.wait(60)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
            process.popen.wait(10)


@pytest.mark.timeout(300)
def test_noetl_ui_serves_the_runs_that_noetl_run_made(
    tmp_path: Path, processes: list[Process]
) -> None:
    ran = _noetl(tmp_path, "run", "examples/fanout.yaml", "--json")
    assert ran.returncode == 0, ran.stderr
    execution_id = json.loads(ran.stdout.strip().splitlines()[-1])["execution_id"]

    ui = Process(tmp_path, "ui", "--port", "0", "--no-browser")
    processes.append(ui)
    base = ui.url()
    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<h1>Executions</h1>" in page.text
        listed = client.get("/api/executions").json()["items"]
        assert [x["execution_id"] for x in listed] == [execution_id]
        assert client.get(f"/ui/executions/{execution_id}").status_code == 200
        assert client.get("/ui/static/execution.js").status_code == 200

        # a run of the same home goes through it (only one process may embed the home's
        # services): its output as always, the execution in this UI's list
        second = _noetl(tmp_path, "run", "examples/hello.yaml", "--json")
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"running on the NoETL UI that serves {tmp_path}: {base.rstrip('/')}/" in (
            second.stderr
        )
        assert "Traceback" not in second.stderr and len(second.stderr.splitlines()) <= 2
        ran_there = json.loads(second.stdout.strip().splitlines()[-1])
        assert ran_there["status"] == "COMPLETED"
        listed = client.get("/api/executions").json()["items"]
        assert ran_there["execution_id"] in [x["execution_id"] for x in listed]
        tested = _noetl(tmp_path, "test", "examples/tests/hello.yaml")  # so do its tests
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "running on the NoETL UI that serves" in tested.stderr
        assert tested.stdout.rstrip().endswith("passed, 0 failed")
        started = client.post("/api/execute", json={"path": "examples/fanout", "payload": {}})
        assert started.status_code == 201, started.text
        new_id = started.json()["execution_id"]

        def ended() -> str:
            return str(client.get(f"/api/executions/{new_id}").json()["status"])

        while ended() == "RUNNING":  # the first one's NATS and worker still run it
            time.sleep(0.1)
        assert ended() == "COMPLETED"
    assert ui.stop(signal.SIGTERM) == 0


@pytest.mark.timeout(300)
def test_noetl_run_with_ui_keeps_the_services_up_until_ctrl_c(
    tmp_path: Path, processes: list[Process]
) -> None:
    run = Process(tmp_path, "run", "examples/hello.yaml", "--ui")
    processes.append(run)
    base = run.url()
    execution_id = re.search(r"/ui/executions/(\d+)", run.seen[-1])
    assert execution_id, run.seen
    with httpx.Client(base_url=base, timeout=30) as client:
        execution = client.get(f"/api/executions/{execution_id[1]}").json()
        assert execution["status"] == "COMPLETED"
        assert client.get(f"/ui/executions/{execution_id[1]}").status_code == 200
    assert run.seen[-1].startswith("COMPLETED: see ")
    assert run.stop(signal.SIGINT) == 0  # the run's own exit code: 0 for COMPLETED


@pytest.mark.timeout(120)
def test_a_home_held_by_a_process_that_serves_nothing_is_refused(tmp_path: Path) -> None:
    """Another process embeds the home's services and serves no API (a `noetl run`), or the
    address it left answers nothing: `noetl run` exits 2 naming it and starts nothing."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "lock = open(sys.argv[1], 'a+')\n"
            "fcntl.flock(lock, fcntl.LOCK_EX)\n"
            "lock.write('pid 4242 (noetl run)')\n"
            "lock.flush()\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
            str(tmp_path / "owner.lock"),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        (tmp_path / "serving.json").write_text(
            json.dumps({"pid": holder.pid, "url": "http://127.0.0.1:9"})  # nothing listens
        )
        refused = _noetl(tmp_path, "run", "examples/hello.yaml")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"NOETL_HOME: {tmp_path} is in use by pid 4242 (noetl run)" in refused.stderr
        assert "Traceback" not in refused.stderr and not (tmp_path / "pg").exists()
    finally:
        holder.kill()
        holder.wait(10)


SLEEPER = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sleeper, path: tests/sleeper}
workflow:
  - step: start
    tool: {kind: shell, command: "sleep 3600"}
"""


@pytest.mark.timeout(300)
def test_a_signal_stops_noetl_ui_while_a_step_runs(
    tmp_path: Path, processes: list[Process]
) -> None:
    """Ctrl-C (or SIGTERM) stops `noetl ui` after a short grace for running steps, not when
    they end: the step is stopped and runs again when the services next start."""
    ui = Process(tmp_path, "ui", "--port", "0", "--no-browser")
    processes.append(ui)
    base = ui.url()
    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.post("/api/catalog/register", json={"content": SLEEPER}).status_code < 300
        started = client.post("/api/execute", json={"path": "tests/sleeper", "payload": {}})
        execution_id = started.json()["execution_id"]

        def claimed() -> bool:
            events = client.get(f"/api/executions/{execution_id}/events").json()["items"]
            return any(e["event_type"] == "command.claimed" for e in events)

        while not claimed():
            time.sleep(0.1)
    ui.popen.send_signal(signal.SIGTERM)
    assert ui.popen.wait(120) == 0  # a hang guard: the step alone would take an hour
    output = "".join(ui.seen)
    while True:  # the rest of its output (the reader stops at its end)
        try:
            output += ui.lines.get(timeout=5)
        except Empty:
            break
    assert "1 running step(s)" in output, output
    assert "Traceback" not in output
