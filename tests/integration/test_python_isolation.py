"""Isolated python steps on real child processes: timeouts, crashes, memory, concurrency."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from noetl.tools import ToolCall, ToolError, close_tools, get_tool, python_exec, python_pool
from noetl.tools.python import configure

MiB = 1024 * 1024

WAIT_FOR_PID_AND_SLEEP = (
    "import os, pathlib, time\npathlib.Path(marker).write_text(str(os.getpid()))\ntime.sleep(60)\n"
)


def python_call(code: str, inputs: Mapping[str, Any] | None = None, **config: Any) -> ToolCall:
    return ToolCall("python", {"code": code, **config}, dict(inputs or {}), 1, "step")


async def run_python(code: str, inputs: Mapping[str, Any] | None = None, **config: Any) -> Any:
    return await get_tool("python").run(python_call(code, inputs, **config))


async def python_error(
    code: str, inputs: Mapping[str, Any] | None = None, **config: Any
) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await run_python(code, inputs, **config)
    return caught.value


async def child_pid() -> int:
    pid: int = await run_python("import os\nreturn os.getpid()")
    return pid


def alive(pid: int) -> bool:
    """Running, not a zombie (a killed grandchild may wait for a reaper that never comes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


async def until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def pid_in(marker: Path) -> int:
    await until(lambda: marker.exists() and marker.read_text().strip())
    return int(marker.read_text())


@pytest.fixture
def pool_settings() -> Iterator[None]:
    """Put pool_size and memory_mb back after a test that changes them."""
    before = python_pool.settings()
    yield
    configure(**before)


# -- timeouts -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_hung_script_times_out_and_the_next_call_works() -> None:
    started = time.monotonic()
    error = await python_error("while True:\n    pass\n", timeout_seconds=0.5)
    assert time.monotonic() - started < 5
    assert error.message == "python step timed out after 0.5 s"
    assert error.retryable
    assert await run_python("return 'alive'") == "alive"


@pytest.mark.timeout(60)
async def test_a_timed_out_script_takes_its_subprocesses_down_with_it(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild"
    code = (
        "import pathlib, subprocess, time\n"
        "sleeper = subprocess.Popen(['sleep', '60'])\n"
        "pathlib.Path(marker).write_text(str(sleeper.pid))\n"
        "time.sleep(60)\n"
    )
    error = await python_error(code, {"marker": str(marker)}, timeout_seconds=1)
    assert error.message == "python step timed out after 1 s"
    grandchild = int(marker.read_text())
    await until(lambda: not alive(grandchild))


@pytest.mark.timeout(60)
async def test_cancelling_a_call_kills_its_process_and_the_next_call_works(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pid"
    task = asyncio.create_task(run_python(WAIT_FOR_PID_AND_SLEEP, {"marker": str(marker)}))
    pid = await pid_in(marker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: not alive(pid))
    assert await run_python("return 'alive'") == "alive"


# -- processes that die ---------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_os_exit_fails_the_step_with_a_clear_message_and_the_next_call_works() -> None:
    error = await python_error("import os\nprint('bye')\nos._exit(3)\n")
    assert error.message == "python process exited with code 3 before returning a result"
    assert error.details["exit_code"] == 3
    assert not error.retryable
    assert await run_python("return 'alive'") == "alive"


@pytest.mark.timeout(60)
async def test_a_segfault_fails_only_its_step() -> None:
    error = await python_error("import ctypes\nctypes.string_at(0)\n")
    assert error.message == (
        "python process was killed by signal 11 (SIGSEGV) before returning a result"
    )
    assert await run_python("return 'alive'") == "alive"


@pytest.mark.timeout(60)
async def test_a_process_killed_from_outside_fails_only_its_step(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    task = asyncio.create_task(run_python(WAIT_FOR_PID_AND_SLEEP, {"marker": str(marker)}))
    os.kill(await pid_in(marker), signal.SIGKILL)
    with pytest.raises(ToolError) as caught:
        await task
    assert caught.value.message == (
        "python process was killed by signal 9 (SIGKILL; out of memory?) before returning a result"
    )
    assert await run_python("return 'alive'") == "alive"


@pytest.mark.timeout(60)
async def test_sys_exit_does_not_end_the_process() -> None:
    before = await child_pid()
    error = await python_error("import sys\nsys.exit(3)\n")
    assert error.message == "SystemExit: 3"
    assert await child_pid() == before


@pytest.mark.timeout(60)
async def test_children_die_with_a_killed_worker(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    script = (
        "import asyncio, sys\n"
        "from noetl.tools import ToolCall, get_tool\n"
        "call = ToolCall('python', {'code': sys.argv[1]}, {'marker': sys.argv[2]}, 1, 'hang')\n"
        "asyncio.run(get_tool('python').run(call))\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script, WAIT_FOR_PID_AND_SLEEP, str(marker)])
    try:
        pid = await pid_in(marker)
    finally:
        worker.kill()
        worker.wait(10)
    await until(lambda: not alive(pid))


@pytest.mark.timeout(60)
def test_a_child_whose_worker_closed_its_pipes_exits_quietly() -> None:
    """A worker that stops while a child starts closes the pipes before the child says it is
    ready: the child ends without a traceback in the worker's stderr (CI saw one in a
    `noetl run` whose failed loop ended the run while a replacement child started)."""
    import pickle

    request_read, request_write = os.pipe()
    reply_read, reply_write = os.pipe()
    argv = [str(request_read), str(reply_write), str(os.getpid())]
    child = subprocess.Popen(
        [sys.executable, "-c", python_pool._BOOT, python_pool._EXEC_PATH, *argv],
        pass_fds=(request_read, reply_write),
        stderr=subprocess.PIPE,
    )
    os.close(request_read)
    os.close(reply_write)
    os.close(reply_read)  # nobody reads the reply: the child's first write breaks the pipe
    setup = pickle.dumps({"sys_path": list(sys.path), "memory_bytes": None})
    os.write(request_write, python_exec.HEADER.pack(len(setup), 0) + setup)
    try:
        _, stderr = child.communicate(timeout=30)
    finally:
        os.close(request_write)
    assert (child.returncode, stderr.decode()) == (0, "")


# -- memory ---------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_a_memory_bomb_fails_with_memory_error_and_the_test_process_survives() -> None:
    error = await python_error("data = bytearray(4 * 1024 ** 3)\n")
    assert error.message == "MemoryError"
    assert error.details["error_type"] == "MemoryError"
    assert await run_python("return 'alive'") == "alive"


@pytest.mark.timeout(60)
async def test_a_growing_memory_bomb_fails_with_memory_error() -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 * 1024))\n"
    error = await python_error(code)
    assert "MemoryError" in error.message
    assert await run_python("return 'alive'") == "alive"


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("pool_settings")
async def test_the_memory_limit_is_configurable() -> None:
    code = "data = bytearray(300 * 1024 * 1024)\nreturn len(data)\n"
    configure(memory_mb=200)
    assert (await python_error(code)).message == "MemoryError"
    configure(memory_mb=1024)
    assert await run_python(code) == 300 * MiB


# -- the pool -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("pool_settings")
async def test_eight_concurrent_calls_complete_and_their_stdout_stays_separate() -> None:
    configure(pool_size=8)
    code = (
        "import os, time\n"
        "print(name, 'first')\n"
        "time.sleep(0.5)\n"
        "print(name, 'second')\n"
        "raise RuntimeError(os.getpid())\n"
    )
    names = [f"call{n}" for n in range(8)]
    started = time.monotonic()
    errors = await asyncio.gather(
        *(python_error(code, {"name": name}) for name in names), return_exceptions=True
    )
    elapsed = time.monotonic() - started
    assert all(isinstance(error, ToolError) for error in errors), errors
    outputs = [error.details["stdout"] for error in errors if isinstance(error, ToolError)]
    assert outputs == [f"{name} first\n{name} second\n" for name in names]
    pids = {
        re.sub(r"^RuntimeError: ", "", error.message)
        for error in errors
        if isinstance(error, ToolError)
    }
    assert len(pids) == 8  # eight children at once
    assert elapsed < 8 * 0.5


@pytest.mark.timeout(60)
async def test_sequential_calls_reuse_a_warm_process() -> None:
    await close_tools()  # a fresh pool: one call at a time needs one process
    pids = [await child_pid() for _ in range(5)]
    assert len(set(pids)) == 1


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("pool_settings")
async def test_a_smaller_pool_retires_idle_processes() -> None:
    configure(pool_size=4)
    code = "import os, time\ntime.sleep(0.3)\nreturn os.getpid()"
    started = await asyncio.gather(*(run_python(code) for _ in range(4)))
    assert len(set(started)) == 4
    configure(pool_size=2)
    await until(lambda: sum(alive(pid) for pid in started) == 2)
    after = await asyncio.gather(*(run_python(code) for _ in range(4)))
    assert set(after) <= set(started)


@pytest.mark.timeout(60)
async def test_globals_of_one_call_do_not_leak_into_the_next() -> None:
    await run_python("leaked = 1")
    assert await run_python("return 'leaked' in globals()") is False


@pytest.mark.timeout(60)
async def test_a_step_s_chdir_and_environment_changes_do_not_reach_the_next_step(
    tmp_path: Path,
) -> None:
    await close_tools()  # a fresh pool: both calls run on the same process
    code = "import os\nos.chdir(path)\nos.environ['NOETL_TEST_LEAK'] = '1'\nreturn os.getpid()"
    pid = await run_python(code, {"path": str(tmp_path)})
    check = "import os\nreturn [os.getpid(), os.getcwd(), os.environ.get('NOETL_TEST_LEAK')]"
    assert await run_python(check) == [pid, os.getcwd(), None]


@pytest.mark.timeout(60)
async def test_close_tools_stops_the_processes_and_the_next_call_starts_new_ones() -> None:
    before = await child_pid()
    await close_tools()
    await until(lambda: not alive(before))
    assert await child_pid() != before


@pytest.mark.timeout(60)
async def test_isolated_false_still_runs_in_the_worker_process() -> None:
    code = "import os\nprint('in process')\nreturn {'pid': os.getpid(), 'n': n + 1}"
    assert await run_python(code, {"n": 1}, isolated=False) == {"pid": os.getpid(), "n": 2}
    error = await python_error("raise ValueError('bad')", isolated=False)
    assert error.message == "ValueError: bad"


@pytest.mark.timeout(60)
async def test_code_can_import_what_the_worker_can() -> None:
    code = "import noetl.tools.python_exec as m\nreturn m.STEP_MODULE"
    assert await run_python(code) == "noetl_step"


@pytest.mark.timeout(60)
async def test_a_reader_left_on_a_closed_fd_does_not_deafen_a_new_childs_pipes() -> None:
    """Readers other code left in the event loop on fds it closed: a new child's pipes get
    those numbers, and its replies are still heard (the call hung until its time limit)."""
    await close_tools()
    loop = asyncio.get_running_loop()
    leaked: list[int] = []
    for _ in range(4):
        read, write = os.pipe()
        loop.add_reader(read, lambda: None)
        loop.add_writer(write, lambda: None)
        leaked += [read, write]
    for fd in leaked:
        os.close(fd)
    try:
        assert isinstance(await run_python("import os\nreturn os.getpid()", timeout_seconds=5), int)
        big = "x" * (1 << 20)  # a request larger than the pipe: written as it drains
        assert await run_python("return len(s)", {"s": big}, timeout_seconds=5) == 1 << 20
    finally:
        for fd in leaked:
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        await close_tools()
