"""The python pool's calls talk to their children on the event loop (no thread between the
loop and the pipes): large frames, calls that wait for a child, several event loops sharing
one pool, a pool closed under a waiting call."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import pytest

from noetl.tools import ToolError, python_exec, python_pool
from noetl.tools.python_pool import PythonPool

SLEEP_THEN_PID = "import os, time\ntime.sleep(delay)\nreturn os.getpid()"


async def run(pool: PythonPool, code: str, **inputs: Any) -> Any:
    reply = await pool.run(code, inputs, step="step", libs={}, context={}, limit_seconds=30.0)
    if not reply.get("ok"):
        raise ToolError(str(reply.get("message")))
    return reply["value"]


@pytest.mark.timeout(60)
async def test_frames_larger_than_a_pipe_go_both_ways() -> None:
    pool = PythonPool(pool_size=1)
    try:
        text = "x" * (3 * 1024 * 1024 + 7)  # a pipe holds 64 KiB: the loop waits to write
        assert await run(pool, "return text + text[:5]", text=text) == text + "xxxxx"
    finally:
        await pool.close()


@pytest.mark.timeout(60)
async def test_a_result_beyond_64_bits_arrives_exact() -> None:
    """The worker fails such a result by the codec's number rule: it must not be a float."""
    pool = PythonPool(pool_size=1)
    try:
        assert await run(pool, "return {'big': 10 ** 30}") == {"big": 10**30}
    finally:
        await pool.close()


@pytest.mark.timeout(60)
async def test_no_thread_runs_while_a_call_waits_for_its_child() -> None:
    pool = PythonPool(pool_size=1)
    try:
        await run(pool, "return 1")  # started: the threads that start children are gone
        call = asyncio.create_task(run(pool, SLEEP_THEN_PID, delay=0.5))
        await asyncio.sleep(0.2)
        names = [thread.name for thread in threading.enumerate()]
        assert not [name for name in names if name.startswith("noetl-python-process")], names
        assert isinstance(await call, int)
    finally:
        await pool.close()


@pytest.mark.timeout(60)
async def test_a_call_waits_for_a_busy_child_and_a_cancelled_waiter_passes_its_turn_on() -> None:
    pool = PythonPool(pool_size=1)
    try:
        first = asyncio.create_task(run(pool, SLEEP_THEN_PID, delay=0.5))
        await asyncio.sleep(0.2)  # the one child is busy
        second = asyncio.create_task(run(pool, SLEEP_THEN_PID, delay=0))
        third = asyncio.create_task(run(pool, SLEEP_THEN_PID, delay=0))
        await asyncio.sleep(0.05)
        second.cancel()
        pid = await first
        assert await asyncio.wait_for(third, 10) == pid  # the same warm child
        with pytest.raises(asyncio.CancelledError):
            await second
    finally:
        await pool.close()


@pytest.mark.timeout(60)
async def test_event_loops_on_two_threads_share_one_pool() -> None:
    pool = PythonPool(pool_size=1)
    try:
        pid = await run(pool, SLEEP_THEN_PID, delay=0)
        other: list[Any] = []
        started = time.monotonic()
        thread = threading.Thread(
            target=lambda: other.append(asyncio.run(run(pool, SLEEP_THEN_PID, delay=0.5)))
        )
        thread.start()
        await asyncio.sleep(0.2)  # the other loop holds the child; this call waits for it
        assert await run(pool, SLEEP_THEN_PID, delay=0) == pid
        assert time.monotonic() - started >= 0.5
        await asyncio.to_thread(thread.join, 10)
        assert other == [pid]
    finally:
        await pool.close()


@pytest.mark.timeout(60)
async def test_closing_the_pool_fails_a_running_and_a_waiting_call() -> None:
    pool = PythonPool(pool_size=1)
    running = asyncio.create_task(run(pool, SLEEP_THEN_PID, delay=30))
    await asyncio.sleep(1.0)
    waiting = asyncio.create_task(run(pool, SLEEP_THEN_PID, delay=0))
    await asyncio.sleep(0.05)
    await pool.close()
    for call in (running, waiting):
        with pytest.raises(ToolError) as caught:
            await asyncio.wait_for(call, 10)
        assert caught.value.message == "the python process pool was shut down"
    assert await run(pool, "return 'anew'") == "anew"  # the next call starts a new pool
    await pool.close()


@pytest.mark.timeout(60)
async def test_a_timeout_counts_from_the_request_not_the_wait_for_a_child() -> None:
    pool = PythonPool(pool_size=1)
    try:
        busy = asyncio.create_task(run(pool, SLEEP_THEN_PID, delay=1.0))
        await asyncio.sleep(0.2)
        reply = await pool.run(
            "return 'ran'", {}, step="step", libs={}, context={}, limit_seconds=0.5
        )
        assert reply["value"] == "ran"  # waited ~0.8 s for the child, ran within 0.5 s
        await busy
    finally:
        await pool.close()


@pytest.mark.timeout(60)
async def test_calls_waiting_for_a_child_that_cannot_start_fail_rather_than_hang(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = PythonPool(pool_size=1)
    try:
        monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # the one sys
        calls = [asyncio.create_task(run(pool, "return 1")) for _ in range(3)]
        outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        assert [type(outcome) for outcome in outcomes] == [ToolError] * 3
        assert all("could not start a python process" in str(o) for o in outcomes)
        monkeypatch.undo()
        assert await run(pool, "return 'started'") == "started"
    finally:
        await pool.close()


@pytest.mark.timeout(60)
async def test_calls_that_come_together_get_a_child_each_even_when_starting_is_slow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call that had a child started for it runs there, not on a child another call gave
    back meanwhile (on a loaded machine a start takes longer than a short step)."""
    pool = PythonPool(pool_size=2)
    try:
        warm = await run(pool, SLEEP_THEN_PID, delay=0)
        start = python_pool._Child.start

        def slow_start(memory_mb: int) -> Any:
            time.sleep(1.0)
            return start(memory_mb)

        monkeypatch.setattr(python_pool._Child, "start", staticmethod(slow_start))
        pids = await asyncio.gather(
            run(pool, SLEEP_THEN_PID, delay=0.2), run(pool, SLEEP_THEN_PID, delay=0.2)
        )
        assert warm in pids
        assert len(set(pids)) == 2
    finally:
        await pool.close()


class CountingLoop(asyncio.SelectorEventLoop):
    """Counts the readers registered with it."""

    def __init__(self) -> None:
        super().__init__()
        self.added = 0

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:  # type: ignore[override]
        self.added += 1
        super().add_reader(fd, callback, *args)


@pytest.mark.timeout(60)
def test_a_child_is_watched_once_for_its_calls_on_one_loop_and_unwatched_when_closed() -> None:
    """Registering the readers of a child's reply pipe and pidfd per call cost the worker
    ~18 us of CPU per step; they stay between calls on one loop, and go before the pipes
    close."""
    pool = PythonPool(pool_size=1)
    loop = CountingLoop()

    async def calls() -> set[int]:
        for n in range(5):
            assert await run(pool, "return n", n=n) == n
        assert pool.pool is not None
        (child,) = pool.pool._children
        fds = {child.replies} | ({child.pidfd} if child.pidfd is not None else set())
        assert fds <= set(loop._selector.get_map())  # type: ignore[attr-defined]
        await pool.close()
        return fds

    try:
        fds = loop.run_until_complete(calls())
        assert loop.added == len(fds)
        assert not fds & set(loop._selector.get_map())  # type: ignore[attr-defined]
    finally:
        loop.close()


@pytest.mark.timeout(60)
async def test_an_idle_child_that_dies_fails_the_next_call_only_and_is_not_watched_meanwhile() -> (
    None
):
    pool = PythonPool(pool_size=1)
    try:
        pid = await run(pool, SLEEP_THEN_PID, delay=0)
        assert pool.pool is not None
        (child,) = pool.pool._children
        assert child.watched is asyncio.get_running_loop()
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):  # its exit is heard while it is idle: the loop stops watching
            await asyncio.sleep(0.05)
            if child.watched is None:
                break
        assert child.watched is None
        with pytest.raises(ToolError, match="killed by signal 9"):
            await run(pool, "return 1")
        assert await run(pool, SLEEP_THEN_PID, delay=0) != pid
    finally:
        await pool.close()


@pytest.mark.parametrize(
    "value",
    [
        {"big": -(2**63) - 1, "small": 1},
        [2**64, 2**64 - 1, 2**63, -(2**63)],
        [123456789, 123456789, 12, 0.5],  # many digits, no long number: orjson reads it
        {"text": "digits 12345678901234567890 in a string", "n": 7},
        {"surrogate": "\ud800", "n": 10**25},
        {"surrogate": "\udfff"},
        0.12345678901234567,
    ],
)
def test_a_reply_is_read_as_the_standard_library_reads_it(value: Any) -> None:
    """orjson reads a small reply, json one that may hold a number orjson would round or a
    string orjson refuses: what arrives is what the child's json wrote, exactly."""
    body = json.dumps({"ok": True, "value": value}).encode()
    assert python_pool._decode(body) == json.loads(body)
    assert repr(python_pool._decode(body)) == repr(json.loads(body))  # 10**25, not 1e+25


@pytest.mark.parametrize(
    "value",
    [
        {"i": 1, "tag": "s"},
        ["é", "\ud800", None, True, 1.5, -(2**70)],
        {"nested": [{"a": []}, {}], "text": 'quote " and \\ backslash\n'},
    ],
)
def test_a_child_writes_a_reply_as_json_dumps_would(value: Any) -> None:
    reply = {"ok": True, "value": value, "stdout": "out", "stderr": ""}
    written = python_exec._encode(reply)
    assert json.loads(written) == json.loads(json.dumps(reply))


@pytest.mark.timeout(60)
async def test_a_result_the_child_cannot_write_fails_its_step_with_its_output() -> None:
    pool = PythonPool(pool_size=1)
    try:
        reply = await pool.run(
            "print('before')\nreturn 10 ** 5000",
            {},
            step="step",
            libs={},
            context={},
            limit_seconds=30.0,
        )
        assert not reply["ok"]
        assert reply["message"].startswith("python step result is not JSON-serialisable")
        assert reply["details"]["stdout"] == "before\n"
        assert await run(pool, "return 'next'") == "next"
    finally:
        await pool.close()
