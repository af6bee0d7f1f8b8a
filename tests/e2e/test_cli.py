"""`noetl run` on the embedded default, `noetl validate`, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _noetl(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"NOETL_DATABASE_URL", "NATS_URL"}}
    env["NOETL_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "noetl.cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(300)
def test_noetl_run_embedded_prints_the_result_and_exits_0(tmp_path: Path) -> None:
    done = _noetl("run", "examples/hello.yaml", "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last["status"] == "COMPLETED"
    assert last["result"] == {"greeting": "HELLO world", "route": "greeted"}
    assert set(last) == {"execution_id", "status", "result", "error"}

    shown = _noetl("run", "examples/hello.yaml", "--set", "message=hello", home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "▶ start" in shown.stdout and "✓ end" in shown.stdout and "COMPLETED" in shown.stdout


@pytest.mark.timeout(300)
def test_noetl_run_of_a_failing_playbook_exits_1_with_the_error(tmp_path: Path) -> None:
    playbook = tmp_path / "fail.yaml"
    playbook.write_text(
        "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: fail}\nworkflow:\n"
        "  - step: start\n    tool: {kind: python, code: 'assert 1 == 2, \"numbers differ\"'}\n"
    )
    done = _noetl("run", str(playbook), "--json", home=tmp_path)
    assert done.returncode == 1
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last["status"] == "FAILED"
    assert "AssertionError: numbers differ" in last["error"]


def test_noetl_validate_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    playbook = tmp_path / "broken.yaml"
    playbook.write_text(
        "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: b}\nworkflow:\n"
        "  - step: start\n    tool: {kind: python, code: x}\n    colour: red\n"
        "    next: [nowhere]\n"
    )
    done = _noetl("validate", str(playbook), home=tmp_path)
    assert done.returncode == 2
    assert f"{playbook}:7:5: workflow[0].colour: unknown key 'colour'" in done.stderr
    assert f"{playbook}:8:12: workflow[0].next[0]: unknown step 'nowhere'" in done.stderr
    ok = _noetl("validate", "examples/hello.yaml", home=tmp_path)
    assert ok.returncode == 0 and "ok" in ok.stdout


def test_bad_settings_name_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "NOETL_WORKER_CONCURRENCY": "many"}
    done = subprocess.run(
        [sys.executable, "-m", "noetl.cli.main", "worker", "start"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "NOETL_WORKER_CONCURRENCY" in done.stderr
