"""`noetl test` on the embedded services: the examples' tests pass; a failing test is a FAIL
row naming what differed, and the exit code says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _noetl(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"NOETL_DATABASE_URL", "NATS_URL"}}
    return subprocess.run(
        [sys.executable, "-m", "noetl.cli.main", *args],
        env={**env, "NOETL_HOME": str(home)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.timeout(400)
def test_noetl_test_runs_the_examples_tests_and_fails_a_wrong_expectation(
    tmp_path: Path,
) -> None:
    (tmp_path / "wrong.yaml").write_text(
        "apiVersion: noetl.io/v2\nkind: PlaybookTest\nmetadata: {name: wrong greeting}\n"
        f"playbook: {ROOT / 'examples' / 'hello.yaml'}\n"
        "expect: {result: {greeting: hi}, skipped: [end]}\n"
    )
    done = _noetl("test", "examples/tests", str(tmp_path), home=tmp_path / "home")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {line.split("  ")[0].strip(): line for line in done.stdout.splitlines()}
    names = (
        "hello greets and routes",
        "fanout with a mocked loop",
        "parent runs its child",
        "retry answers after one retry",
    )
    for name in names:
        assert "PASS" in rows[name], done.stdout
    assert "FAIL" in rows["wrong greeting"]
    assert "result.greeting: 'HELLO world', expected 'hi'" in done.stdout
    assert "skipped: end was not skipped" in done.stdout
    assert done.stdout.rstrip().endswith("7 passed, 1 failed")

    passing = _noetl("test", "examples/tests", home=tmp_path / "home")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    bad = tmp_path / "bad" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text("kind: PlaybookTest\n")
    refused = _noetl("test", str(bad), home=tmp_path / "home")
    assert refused.returncode == 2 and "playbook: the path" in refused.stderr
