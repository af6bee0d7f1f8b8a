"""A server or worker started while NATS or PostgreSQL does not answer keeps trying, and
stops when told to (SIGTERM): the server serves without NATS, connecting in the background;
a server still waiting for PostgreSQL gives up its start; a worker stops trying to
subscribe. Before, nats-py retried a first connection forever (the server never served, and
neither it nor a worker could be stopped but by SIGKILL), and uvicorn let a SIGTERM wait
until the application had started (up to the database wait's 120 s)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from noetl.config import Settings
from noetl.embedded.services import free_port
from tests.e2e.test_processes import ROOT, _cli, _env

# a process that does not stop is a failure, however long it is given: this is its bound
STOPS_WITHIN = 30.0


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "noetl.cli.main", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _until_logged(log: Path, text: str, process: subprocess.Popen[bytes]) -> None:
    """Wait until the process has written `text` (it is trying to connect)."""
    deadline = time.monotonic() + 60
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.1)


def _stopped(process: subprocess.Popen[bytes], log: Path) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(STOPS_WITHIN)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    raise AssertionError("did not stop on SIGTERM:\n" + log.read_text(errors="replace"))


def _nowhere() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def test_a_server_without_nats_serves_and_stops(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {**_env(settings, f"http://127.0.0.1:{port}", port), "NATS_URL": f"nats://{_nowhere()}"}
    assert _cli(env, "db", "init").returncode == 0
    log = tmp_path / "server.log"
    server = _spawn(["server", "start"], env, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text(errors="replace")
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.2)
        assert health == {"status": "ok", "nats": False}
        assert "connecting in the background" in log.read_text()
    finally:
        _stopped(server, log)


def test_a_server_waiting_for_postgres_stops(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **_env(settings, f"http://127.0.0.1:{port}", port),
        "NOETL_DATABASE_URL": f"postgresql://postgres@{_nowhere()}/postgres",
        "NOETL_LOG_LEVEL": "INFO",
    }
    log = tmp_path / "server.log"
    server = _spawn(["server", "start"], env, log)
    _until_logged(log, "error connecting", server)
    assert _stopped(server, log) != 0  # it did not start
    assert "stopped while starting" in log.read_text()


def test_a_worker_without_nats_stops(settings: Settings, tmp_path: Path) -> None:
    env = {**_env(settings, f"http://{_nowhere()}", 0, "unreachable")}
    env["NATS_URL"] = f"nats://{_nowhere()}"
    log = tmp_path / "worker.log"
    worker = _spawn(["worker", "start"], env, log)
    _until_logged(log, "Connection refused", worker)
    assert _stopped(worker, log) == 0
