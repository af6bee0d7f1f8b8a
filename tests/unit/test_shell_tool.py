"""The shell tool: real /bin/sh processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from noetl.tools import ToolCall, ToolError
from noetl.tools.shell import ShellTool


async def run_shell(**config: Any) -> Any:
    return await ShellTool().run(ToolCall("shell", config, {}, 1, "step"))


async def shell_error(**config: Any) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await run_shell(**config)
    return caught.value


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return state.split()[1] != "Z"


@pytest.mark.timeout(30)
async def test_a_command_returns_its_exit_code_stdout_and_stderr() -> None:
    result = await run_shell(command="echo hello; echo warning >&2")
    assert result == {"exit_code": 0, "stdout": "hello\n", "stderr": "warning\n"}


@pytest.mark.timeout(30)
async def test_a_non_zero_exit_is_an_error_with_the_code_and_the_end_of_stderr() -> None:
    error = await shell_error(command="echo partial; echo 'no such thing' >&2; exit 7")
    assert "exited with code 7" in str(error)
    assert "no such thing" in str(error)
    assert not error.retryable
    assert error.details == {"exit_code": 7, "stdout": "partial\n", "stderr": "no such thing\n"}


@pytest.mark.timeout(30)
async def test_the_error_message_keeps_only_the_last_500_characters_of_stderr() -> None:
    error = await shell_error(command="printf 'x%.0s' $(seq 1 2000) >&2; printf END >&2; exit 1")
    assert str(error).endswith("xEND")
    assert len(str(error)) < 600
    assert len(error.details["stderr"]) == 2003


@pytest.mark.timeout(30)
async def test_cmds_run_in_order_and_return_the_last_result_with_every_step() -> None:
    result = await run_shell(cmds=["echo one", "echo two"])
    assert result["exit_code"] == 0
    assert result["stdout"] == "two\n"
    assert [step["stdout"] for step in result["steps"]] == ["one\n", "two\n"]
    assert [step["command"] for step in result["steps"]] == ["echo one", "echo two"]


@pytest.mark.timeout(30)
async def test_cmds_stop_at_the_first_failure(tmp_path: Path) -> None:
    marker = tmp_path / "third-ran"
    error = await shell_error(cmds=["echo one", "echo broken >&2; exit 3", f"touch {marker}"])
    assert "command 2 of 3 exited with code 3" in str(error)
    assert "broken" in str(error)
    assert [step["exit_code"] for step in error.details["steps"]] == [0, 3]
    assert error.details["exit_code"] == 3
    assert not marker.exists()


@pytest.mark.timeout(30)
async def test_env_is_merged_over_the_worker_environment_and_cwd_is_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOETL_SHELL_INHERITED", "from-worker")
    monkeypatch.setenv("NOETL_SHELL_REMOVED", "present")
    result = await run_shell(
        command='echo "$NOETL_SHELL_INHERITED $NOETL_SHELL_GIVEN ${NOETL_SHELL_REMOVED:-gone}"'
        "; pwd",
        env={"NOETL_SHELL_GIVEN": 42, "NOETL_SHELL_REMOVED": None},
        cwd=str(tmp_path),
    )
    inherited_and_given, directory = result["stdout"].splitlines()
    assert inherited_and_given == "from-worker 42 gone"
    assert Path(directory).resolve() == tmp_path.resolve()


@pytest.mark.timeout(30)
async def test_a_missing_cwd_is_an_error(tmp_path: Path) -> None:
    error = await shell_error(command="true", cwd=str(tmp_path / "nowhere"))
    assert "is not a directory" in str(error)


@pytest.mark.timeout(30)
async def test_a_timeout_kills_the_command_and_its_child_processes(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = asyncio.get_running_loop().time()
    error = await shell_error(command=f"sleep 100 & echo $! > {pidfile}; wait", timeout_seconds=1)
    assert asyncio.get_running_loop().time() - started < 10
    assert str(error) == "shell command timed out after 1 s"
    assert error.retryable
    child = int(pidfile.read_text())
    for _ in range(100):
        if not is_running(child):
            break
        await asyncio.sleep(0.05)
    assert not is_running(child), f"background child {child} survived the timeout"


@pytest.mark.timeout(30)
async def test_a_timeout_also_applies_when_a_background_child_holds_the_output_open(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "pid"
    error = await shell_error(command=f"sleep 100 & echo $! > {pidfile}", timeout_seconds=1)
    assert error.retryable
    child = int(pidfile.read_text())
    for _ in range(100):
        if not is_running(child):
            break
        await asyncio.sleep(0.05)
    assert not is_running(child)


@pytest.mark.timeout(30)
async def test_captured_output_is_capped_at_one_mib_per_stream() -> None:
    result = await run_shell(command="head -c 3000000 /dev/zero | tr '\\0' a; echo; echo LAST")
    assert len(result["stdout"].encode()) < 1024 * 1024 + 200
    assert "bytes not captured" in result["stdout"]
    assert result["stdout"].startswith("aaaa")
    assert result["stdout"].endswith("LAST\n")


@pytest.mark.timeout(30)
async def test_a_command_is_required() -> None:
    error = await shell_error(cwd=os.getcwd())
    assert "needs `command`" in str(error)
