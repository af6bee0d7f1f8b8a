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


def _playbook(folder: Path, name: str, workflow: str) -> Path:
    """`name`.yaml in `folder`: a playbook named `name` whose workflow is `workflow` (its
    list, as YAML text)."""
    path = folder / f"{name}.yaml"
    head = f"apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {{name: {name}}}\nworkflow:\n"
    path.write_text(head + workflow)
    return path


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
    playbook = _playbook(
        tmp_path,
        "fail",
        "  - step: start\n    tool: {kind: python, code: 'assert 1 == 2, \"numbers differ\"'}\n",
    )
    done = _noetl("run", str(playbook), "--json", home=tmp_path)
    assert done.returncode == 1
    last = json.loads(done.stdout.strip().splitlines()[-1])
    assert last["status"] == "FAILED"
    assert "AssertionError: numbers differ" in last["error"]


def test_noetl_validate_lists_every_problem_with_its_line(tmp_path: Path) -> None:
    playbook = _playbook(
        tmp_path,
        "broken",
        "  - step: start\n    tool: {kind: python, code: x}\n    colour: red\n"
        "    next: [nowhere]\n",
    )
    done = _noetl("validate", str(playbook), home=tmp_path)
    assert done.returncode == 2
    assert f"{playbook}:7:5: workflow[0].colour: unknown key 'colour'" in done.stderr
    assert f"{playbook}:8:12: workflow[0].next[0]: unknown step 'nowhere'" in done.stderr
    ok = _noetl("validate", "examples/hello.yaml", home=tmp_path)
    assert ok.returncode == 0 and "ok" in ok.stdout


def test_a_file_that_is_not_a_playbook_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    # /dev/zero was read until memory ran out; a binary file was a UnicodeDecodeError
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"step: \xd0\x00\xff")
    huge = tmp_path / "huge.yaml"
    huge.write_text("# " + "x" * (1024 * 1024) + "\n")
    cases = {
        "/dev/zero": "larger than 1048576 bytes",
        str(huge): "larger than 1048576 bytes",
        str(binary): "not UTF-8 text (byte 0xd0 at offset 6)",
    }
    for path, message in cases.items():
        for command in ("validate", "run"):
            done = _noetl(command, path, home=tmp_path)
            assert done.returncode == 2, (command, path, done.stderr)
            assert f"cannot read {path}: {message}" in done.stderr, done.stderr


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


@pytest.mark.timeout(300)
def test_noetl_run_shows_a_retry_and_a_failed_loop_without_warnings(tmp_path: Path) -> None:
    retried = _noetl("run", "examples/retry.yaml", home=tmp_path)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    # a first run in a home: a plain note of the new key, from the run's process, and not the
    # server's warning (its server runs in another process)
    assert retried.stderr.startswith("note: credentials will be encrypted"), retried.stderr
    assert "WARNING" not in retried.stderr, retried.stderr
    lines = retried.stdout.splitlines()
    retry = "  start · flaky: retry 2/3 in 0.2 s: ConnectionError: the service is warming up"
    assert lines.index("▶ start") < lines.index(retry) < lines.index("▶ end")

    # one iteration fails at once while the others still run: they are cancelled quietly
    playbook = _playbook(
        tmp_path,
        "loop",
        "  - step: start\n"
        "    loop: {in: '{{ range(6) | list }}', iterator: i, spec: {mode: parallel}}\n"
        "    tool:\n      kind: python\n      input: {i: '{{ i }}'}\n      code: |\n"
        "        import time\n        if i == 3:\n            raise ValueError('bad item')\n"
        "        time.sleep(15)\n        result = i\n",
    )
    failed = _noetl("run", str(playbook), home=tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "✗ start (" in failed.stdout and "1 failed): iteration 3: ValueError: bad item" in (
        failed.stdout
    )
    assert failed.stdout.count("bad item") == 2  # the step's line, then the error in full
    assert "WARNING" not in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
    assert "HTTP 409" not in failed.stdout + failed.stderr  # (an execution id may hold 409)


@pytest.mark.timeout(300)
def test_noetl_run_with_a_timeout_cancels_a_run_still_going_after_it(tmp_path: Path) -> None:
    playbook = _playbook(
        tmp_path,
        "slow",
        '  - step: start\n    tool: {kind: python, code: "import time\\ntime.sleep(30)"}\n',
    )
    ran = _noetl("run", str(playbook), "--timeout", "1", home=tmp_path)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "CANCELLED execution" in ran.stdout
    assert "timed out: still running after its time limit of 1 s" in ran.stdout
    refused = _noetl("run", str(playbook), "--timeout", "0", home=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "timeout_seconds" in refused.stderr and "Traceback" not in refused.stderr
