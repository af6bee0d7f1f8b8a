"""Operator commands as a user runs them against a server: `noetl rerun` (a step that counts
its runs in a file runs once in all after a failed execution and its re-run), `noetl logs`,
and `execute --wait` printing a policy retry while it happens."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from noetl.embedded.runtime import Runtime
from tests.conftest import event_log, eventually, run_playbook, slow_chain
from tests.integration.test_retry_notices import flaky_playbook

ROOT = Path(__file__).resolve().parents[2]

PLAYBOOK = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: count_runs, path: tests/count_runs}}
workload: {{fail: true}}
workflow:
  - step: start
    tool:
      kind: python
      code: |
        with open("{counter}", "a") as f:
            f.write("ran\\n")
        result = 41
    next: [finish]
  - step: finish
    tool:
      kind: python
      input: {{fail: "{{{{ fail }}}}", before: "{{{{ start }}}}"}}
      code: |
        if fail:
            raise RuntimeError("not yet")
        result = before + 1
"""


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SERVER_API_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "noetl.cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_noetl_rerun_reuses_the_completed_step(runtime: Runtime, tmp_path: Path) -> None:
    counter = tmp_path / "runs.txt"
    playbook = tmp_path / "count_runs.yaml"
    playbook.write_text(PLAYBOOK.format(counter=counter))
    registered = await asyncio.to_thread(_cli, runtime.url, "register", str(playbook))
    assert registered.returncode == 0, registered.stderr
    failed = await asyncio.to_thread(_cli, runtime.url, "execute", "tests/count_runs", "--wait")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "not yet" in failed.stdout
    execution_id = failed.stdout.split("execution ", 1)[1].split()[0]

    rerun = await asyncio.to_thread(
        _cli, runtime.url, "rerun", execution_id, "--set", "fail=false", "--wait"
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"re-run of {execution_id} from finish; reused: start" in rerun.stdout
    assert "↺ start reused" in rerun.stdout and "COMPLETED" in rerun.stdout
    assert rerun.stdout.rstrip().endswith("\n42")  # the result, as `noetl run` prints it
    assert counter.read_text().splitlines() == ["ran"]


PRINTS = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: prints, path: tests/prints}
workflow:
  - step: start
    tool: {kind: python, code: "print('starting up'); result = 1"}
    next: [fails]
  - step: fails
    tool:
      kind: python
      code: |
        print("about to fail")
        raise KeyError("missing")
"""


async def test_noetl_logs_prints_each_steps_output(runtime: Runtime) -> None:
    async with httpx.AsyncClient(base_url=runtime.url, timeout=30) as api:
        execution = await run_playbook(api, PRINTS)
    execution_id = execution["execution_id"]
    shown = await asyncio.to_thread(_cli, runtime.url, "logs", execution_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:2] == ["── start stdout", "starting up"]
    assert "── fails stdout · FAILED" in lines and "about to fail" in lines
    assert "── fails stderr · FAILED" in lines
    assert "line 2 (playbook line 14), in <module>" in shown.stdout
    assert lines[-1] == "KeyError: 'missing'"
    one = await asyncio.to_thread(_cli, runtime.url, "logs", execution_id, "--step", "start")
    assert one.stdout.splitlines() == ["── start stdout", "starting up"]
    followed = await asyncio.to_thread(_cli, runtime.url, "logs", execution_id, "--follow")
    assert followed.returncode == 0 and followed.stdout == shown.stdout


async def test_execute_wait_prints_the_retry_as_it_happens(
    runtime: Runtime, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    playbook, go = flaky_playbook(tmp_path)
    file = tmp_path / "flaky.yaml"
    file.write_text(playbook)
    registered = await asyncio.to_thread(_cli, runtime.url, "register", str(file))
    assert registered.returncode == 0, registered.stderr
    waiting = asyncio.create_task(
        asyncio.to_thread(_cli, runtime.url, "execute", "tests/flaky", "--wait")
    )

    async def retried() -> bool:
        listed = (await api.get("/api/executions", params={"path": "tests/flaky"})).json()
        if not listed["items"]:
            return False
        events = await event_log(api, listed["items"][0]["execution_id"])
        return any(e["event_type"] == "command.retrying" for e in events)

    await eventually(retried)
    go.touch()
    done = await waiting
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    retry = "  start · call: retry 2/4 in 0.1 s: ConnectionError: the service is warming up"
    assert retry in lines
    assert (
        lines.index("▶ start")
        < lines.index(retry)
        < lines.index(next(line for line in lines if line.startswith("✓ start")))
    )


async def test_ctrl_c_on_execute_wait_stops_following_and_says_how_to_cancel(
    runtime: Runtime, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    file = tmp_path / "slow.yaml"
    file.write_text(slow_chain(600))
    registered = await asyncio.to_thread(_cli, runtime.url, "register", str(file))
    assert registered.returncode == 0, registered.stderr
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "noetl.cli.main",
        "execute",
        "tests/slow_chain",
        "--wait",
        env={**os.environ, "SERVER_API_URL": runtime.url},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    while b"\xe2\x96\xb6 start" not in await process.stdout.readline():  # "▶ start"
        pass
    process.send_signal(signal.SIGINT)
    stderr = (await process.stderr.read()).decode()
    assert await process.wait() == 130
    execution_id = stderr.split("execution ", 1)[1].split()[0]
    assert f"stopped following; execution {execution_id} goes on" in stderr
    assert "Traceback" not in stderr
    view = (await api.get(f"/api/executions/{execution_id}")).json()
    assert view["status"] == "RUNNING"  # only the following stopped
    await api.post(f"/api/executions/{execution_id}/cancel")
