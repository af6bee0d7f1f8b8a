"""What a `noetl` process imports: imports are most of the CPU of a short `noetl run`
(benchmarks/README.md §4), so modules the run never uses are not loaded, the server's are
loaded by the run's server process and not by the run's own process (which loads the command
line and the worker meanwhile), and the loading is not slowed by the garbage collector
rescanning what it loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# prints on stderr which of the watched modules are loaded and the garbage collector's state
_REPORT = """
import gc, json, sys

WATCHED = {watched!r}

def report():
    loaded = [name for name in WATCHED if sys.modules.get(name) is not None]
    found = {{"loaded": loaded, "gc_enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}}
    print("PROBE " + json.dumps(found), file=sys.stderr)
"""

# runs `noetl ARGS...` in-process and reports from an exit handler (they run before os._exit)
PROBE = (
    _REPORT
    + """
import atexit

atexit.register(report)
from noetl.cli import main

sys.argv = ["noetl", *sys.argv[1:]]
main()
"""
)

# the server process up to its orders (stdin ends at once: it then exits)
SERVER_PROBE = (
    _REPORT
    + """
from noetl.embedded import server_main

def orders():
    report()
    return None

server_main._orders = orders
server_main.main()
"""
)

UNUSED = [
    "httpx._main",  # httpx's own command-line client (click, pygments, rich's tables)
    "pygments",
    "rich.progress",  # the progress bars: on a terminal only
    "cryptography.hazmat.primitives.serialization",  # only to sign a service account's JWT
    "websockets",  # the API has no WebSocket route
    "aiohttp",  # nats-py's WebSocket transport's (noetl.bus)
    "duckdb",  # tools are loaded when a step uses them (noetl.tools.registry)
    "noetl.tools.postgres",
]
SERVER = ["fastapi", "psycopg", "uvicorn"]  # in the server process
WORKER = ["nats", "noetl.worker.worker", "noetl.tools.python"]  # in the run's own process
CLI = ["typer", "rich.console"]  # ditto


WATCHED = UNUSED + SERVER + WORKER + CLI


def _probe(
    *args: str, home: Path, script: str = PROBE
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k not in {"NOETL_DATABASE_URL", "NATS_URL"}}
    env["NOETL_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-c", script.format(watched=WATCHED), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("PROBE ")]
    assert lines, done.stderr
    return done, json.loads(lines[-1].removeprefix("PROBE "))


@pytest.mark.timeout(300)
def test_noetl_run_loads_the_command_line_and_the_worker_and_collects_garbage_after(
    tmp_path: Path,
) -> None:
    playbook = tmp_path / "one.yaml"
    playbook.write_text(
        "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: one}\nworkflow:\n"
        "  - step: start\n    tool: {kind: python, code: \"result = {'ok': True}\"}\n"
    )
    done, state = _probe("run", str(playbook), "--json", home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["status"] == "COMPLETED"
    # the used ones (the probe sees imports); the server's are the server process's
    assert sorted(state["loaded"]) == sorted(WORKER + CLI)
    # the collector was paused while the worker loaded, then on again, with what was loaded
    # frozen out of its scans
    assert state["gc_enabled"] is True
    assert state["frozen"] > 30_000


@pytest.mark.timeout(300)
def test_the_server_process_loads_the_server_alone(tmp_path: Path) -> None:
    done, state = _probe(home=tmp_path, script=SERVER_PROBE)
    assert done.returncode == 0, done.stderr
    assert sorted(state["loaded"]) == sorted([*SERVER, "nats"])  # nats: it publishes
    assert state["gc_enabled"] is True
    assert state["frozen"] > 50_000


def test_noetl_help_loads_neither_server_nor_worker(tmp_path: Path) -> None:
    done, state = _probe("--help", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout
    assert [name for name in state["loaded"] if name in SERVER + WORKER] == []
    assert state["gc_enabled"] is True


# the run's process: once the worker is loaded (while PostgreSQL and NATS start), its client
# of the API loads nothing more, neither when made nor at its first request
CLIENT_PROBE = """
import asyncio, json, sys

import httpx

from noetl.config import Settings
from noetl.embedded.runtime import Runtime, preload

preload(server=False)
loaded = set(sys.modules)
settings = Settings.from_env(server_url="http://127.0.0.1:9")


async def request() -> None:
    async with Runtime(settings, None, []).client(timeout=5) as client:
        try:
            await client.get("/health")
        except httpx.TransportError:
            pass


asyncio.run(request())
print(json.dumps(sorted(set(sys.modules) - loaded)))
"""


def _printed(script: str, *args: str) -> Any:
    """What `python -c SCRIPT ARGS...` printed, as JSON (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_runs_client_loads_nothing_once_the_worker_is_loaded() -> None:
    assert _printed(CLIENT_PROBE) == []


# the server's imports with (argv[1] == "lighter") or without the server process's savings
# (noetl.embedded.server_main._lighter), then its OpenAPI document
OPENAPI_PROBE = """
import json, sys

from noetl.embedded import server_main
from noetl.embedded.runtime import preload

done = server_main._lighter() if sys.argv[1] == "lighter" else (lambda: None)
preload(worker=False)
done()
from fastapi.openapi import models

from noetl.config import Settings
from noetl.server.app import create_app

state = {
    "v1": sys.modules.get("pydantic.v1") is not None,
    "deferred": not models.OpenAPI.__pydantic_complete__,
    "openapi": create_app(Settings.from_env(), ui=False).openapi(),
}
print(json.dumps(state))
"""


def test_the_server_process_builds_the_openapi_models_when_used_and_skips_pydantic_v1() -> None:
    states = {mode: _printed(OPENAPI_PROBE, mode) for mode in ("lighter", "as is")}
    assert (states["lighter"]["v1"], states["lighter"]["deferred"]) == (False, True)
    assert (states["as is"]["v1"], states["as is"]["deferred"]) == (True, False)
    assert states["lighter"]["openapi"] == states["as is"]["openapi"]  # the same document
    assert len(states["lighter"]["openapi"]["paths"]) > 20
