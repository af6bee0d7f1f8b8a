"""What a `noetl` process imports: imports are most of the CPU of a short `noetl run`
(benchmarks/README.md §4), so modules the run never uses are not loaded, and the loading is
not slowed by the garbage collector rescanning what it loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# runs `noetl ARGS...` in-process and, from an exit handler (they run before os._exit),
# reports which of the watched modules were loaded and the garbage collector's state
PROBE = """
import atexit, gc, json, sys

WATCHED = {watched!r}

def report():
    loaded = [name for name in WATCHED if sys.modules.get(name) is not None]
    state = {{"loaded": loaded, "gc_enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}}
    print("PROBE " + json.dumps(state), file=sys.stderr)

atexit.register(report)
import noetl.cli.main as cli

sys.argv = ["noetl", *sys.argv[1:]]
cli.main()
"""

UNUSED = [
    "httpx._main",  # httpx's own command-line client (click, pygments, rich's tables)
    "pygments",
    "rich.progress",  # the progress bars: on a terminal only
    "cryptography.hazmat.primitives.serialization",  # only to sign a service account's JWT
    "websockets",  # the API has no WebSocket route
    "aiohttp",  # nats-py's WebSocket transport's (noetl.bus)
    "duckdb",  # tools are loaded when a step uses them (noetl.tools.registry)
    "noetl.tools.postgres",
    "noetl.tools.transfer",
]
USED = ["fastapi", "psycopg", "nats", "uvicorn"]


def _probe(*args: str, home: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k not in {"NOETL_DATABASE_URL", "NATS_URL"}}
    env["NOETL_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(watched=UNUSED + USED), *args],
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
def test_noetl_run_loads_only_what_the_run_uses_and_collects_garbage_after(
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
    assert sorted(state["loaded"]) == sorted(USED)  # the used ones: the probe sees imports
    # the collector was paused while the server and worker loaded, then on again, with what
    # they loaded frozen out of its scans
    assert state["gc_enabled"] is True
    assert state["frozen"] > 50_000


def test_noetl_help_loads_neither_server_nor_worker(tmp_path: Path) -> None:
    done, state = _probe("--help", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "run" in done.stdout
    assert [name for name in state["loaded"] if name in USED] == []  # (help text: pygments)
    assert state["gc_enabled"] is True
