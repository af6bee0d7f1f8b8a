"""Ctrl-C or SIGTERM on `noetl run`: the execution is cancelled, the embedded services stop,
no postgres, nats-server or server process is left behind, and the next run in the same home
starts clean. And a run that ends, however it ends, leaves no process of its own behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SLOW = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: slow, path: tests/slow}
workflow:
  - step: start
    tool: {kind: python, code: "import time; time.sleep(600); result = 1"}
"""
QUICK = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: quick, path: tests/quick}
workflow:
  - step: only
    tool: {kind: python, code: "result = 2"}
"""


def _env(home: Path) -> dict[str, str]:
    """The run's environment, marked with the home folder: every process the run starts
    inherits it (its server process, python processes, postgres, nats-server)."""
    env = {k: v for k, v in os.environ.items() if k not in {"NOETL_DATABASE_URL", "NATS_URL"}}
    return {**env, "NOETL_HOME": str(home), "NOETL_TEST_RUN": str(home)}


def _processes_of(home: Path) -> list[str]:
    """Command lines of live processes started by runs in `home` (see `_env`)."""
    mark = f"NOETL_TEST_RUN={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if mark in environment and "Z (zombie)" not in status:
            found.append(command)
    return found


def _processes_under(home: Path) -> list[str]:
    """Command lines of live processes that mention the home folder (postgres, nats-server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = next(
                line for line in (entry / "status").read_text().splitlines() if line[:6] == "State:"
            )
        except (OSError, StopIteration):
            continue
        command = raw.replace(b"\0", b" ").decode(errors="replace")
        if str(home) in command and "Z (zombie)" not in state:
            found.append(command)
    return found


def _run(home: Path, playbook: Path, module: str) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE run PLAYBOOK` to its end (`noetl.cli`: the `noetl` command's entry)."""
    return subprocess.run(
        [sys.executable, "-m", module, "run", str(playbook)],
        env=_env(home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _start_run(home: Path, playbook: Path, *, own_group: bool = False) -> subprocess.Popen[str]:
    """`noetl run PLAYBOOK` in `home`, its output (stdout and stderr) read line by line."""
    return subprocess.Popen(
        [sys.executable, "-m", "noetl.cli.main", "run", str(playbook)],
        env=_env(home),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=own_group,  # a process group of its own, for a terminal's Ctrl-C
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_cancels_and_stops_everything(tmp_path: Path, sig: int) -> None:
    home = tmp_path / "home"
    slow, quick = tmp_path / "slow.yaml", tmp_path / "quick.yaml"
    slow.write_text(SLOW)
    quick.write_text(QUICK)
    process = _start_run(home, slow, own_group=True)
    assert process.stdout is not None
    seen = []
    for line in process.stdout:  # until the slow step runs
        seen.append(line)
        if "▶ start" in line:
            break
    assert any("▶ start" in line for line in seen), seen
    assert _processes_under(home), "the embedded services should be running"
    sent = time.monotonic()
    if sig == signal.SIGINT:  # Ctrl-C: a terminal signals the whole foreground group
        os.killpg(process.pid, sig)
    else:
        process.send_signal(sig)
    rest = process.stdout.read()
    code = process.wait()
    print(f"{signal.Signals(sig).name}: stopped {time.monotonic() - sent:.1f} s after the signal")
    output = "".join(seen) + rest
    assert code == 130, output
    assert "interrupted: cancelling the execution" in output and "CANCELLED" in output
    assert "Traceback" not in output
    assert "ERROR" not in output  # e.g. a heartbeat that outlived its worker: "Unclosed client"
    assert len(output.splitlines()) < 10, output
    assert _processes_under(home) == []
    assert _processes_of(home) == []

    again = _run(home, quick, "noetl.cli.main")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "▶ start" not in again.stdout  # the cancelled run's step is not run again
    assert "COMPLETED" in again.stdout
    assert _processes_under(home) == []
    assert _processes_of(home) == []


@pytest.mark.timeout(300)
def test_sigterm_while_the_services_start_stops_them_too(tmp_path: Path) -> None:
    home = tmp_path / "home"
    slow = tmp_path / "slow.yaml"
    slow.write_text(SLOW)
    process = _start_run(home, slow)
    assert process.stdout is not None
    first = process.stdout.readline()  # a fresh home: the key note, then the services start
    assert first.startswith("note: credentials will be encrypted"), first
    process.send_signal(signal.SIGTERM)
    rest = process.stdout.read()
    assert process.wait() == 130, first + rest  # not killed by the signal's default action
    assert "interrupted" in rest and "Traceback" not in rest
    assert _processes_under(home) == []
    assert _processes_of(home) == []


@pytest.mark.timeout(300)
def test_a_run_leaves_no_process_behind_when_it_returns(tmp_path: Path) -> None:
    home = tmp_path / "home"
    quick, invalid = tmp_path / "quick.yaml", tmp_path / "invalid.yaml"
    quick.write_text(QUICK)
    invalid.write_text("apiVersion: noetl.io/v2\nkind: Playbook\nworkflow: []\n")
    for playbook, code in ((quick, 0), (invalid, 2)):  # the invalid one: before any service
        # into a file, not a pipe: reading a pipe to its end would wait for every process that
        # inherited it, not for the run alone
        with (tmp_path / "output").open("w+") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "noetl.cli", "run", str(playbook)],
                env=_env(home),
                cwd=ROOT,
                stdout=output,
                stderr=output,
            )
            returned = process.wait(timeout=240)
            left = _processes_of(home)  # the moment it returned: the server process too
            output.seek(0)
            assert returned == code, output.read()
        assert left == [], playbook.name


def _server_process_of(run: int) -> int | None:
    """The pid of the run's server process: its child that runs the run's own command line
    (forked) or noetl.embedded.server_main (a new interpreter)."""
    try:
        command = Path(f"/proc/{run}/cmdline").read_bytes()
    except OSError:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            own = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == run and (own == command or b"noetl.embedded.server_main" in own):
            return int(entry.name)
    return None


@pytest.mark.timeout(300)
def test_a_killed_run_leaves_its_server_process_to_end_by_itself(tmp_path: Path) -> None:
    """SIGKILL runs no handler: the server process ends when its stdin does."""
    home = tmp_path / "home"
    quick = tmp_path / "quick.yaml"
    quick.write_text(QUICK)
    process = subprocess.Popen(
        [sys.executable, "-m", "noetl.cli", "run", str(quick)],
        env=_env(home),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while (server := _server_process_of(process.pid)) is None:
        assert time.monotonic() < deadline, "no server process started"
        time.sleep(0.005)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 120
    while Path(f"/proc/{server}").exists() and "Z (zombie)" not in _status(server):
        assert time.monotonic() < deadline, _processes_of(home)
        time.sleep(0.05)
    again = _run(home, quick, "noetl.cli")  # joins and stops what the killed run left
    assert again.returncode == 0, again.stdout + again.stderr
    assert _processes_of(home) == []


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""
