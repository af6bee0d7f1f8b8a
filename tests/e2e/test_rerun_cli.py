"""`noetl rerun` as a user runs it: a step that counts its runs in a file runs once in all
after a failed execution and its re-run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from noetl.embedded.runtime import Runtime

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
    assert '"result": 42' in rerun.stdout
    assert counter.read_text().splitlines() == ["ran"]
