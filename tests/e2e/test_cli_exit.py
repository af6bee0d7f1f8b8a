"""`noetl` ends its process with os._exit after doing what a normal exit does first: the
threads' exit hooks (an idle thread pool is told to stop) and non-daemon threads, the atexit
handlers, flushed output, the exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _noetl_after(setup: str, *args: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"{setup}\n"
        "import noetl.cli.main as cli\n"
        f"sys.argv = ['noetl', *{list(args)!r}]\n"
        "cli.main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(180)
def test_an_idle_thread_pool_does_not_hold_up_the_exit() -> None:
    done = _noetl_after(
        "import concurrent.futures\n"
        "pool = concurrent.futures.ThreadPoolExecutor(1)\n"
        "assert pool.submit(int, '7').result() == 7",
        "--version",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("noetl ")


@pytest.mark.timeout(180)
def test_exit_handlers_run_and_output_is_flushed_with_the_exit_code() -> None:
    done = _noetl_after(
        "import atexit\natexit.register(print, 'handler ran')\nprint('buffered', end='')",
        "run",
        "/nonexistent/playbook.yaml",
    )
    assert done.returncode == 2
    assert done.stdout == "bufferedhandler ran\n"
    assert "cannot read /nonexistent/playbook.yaml" in done.stderr
