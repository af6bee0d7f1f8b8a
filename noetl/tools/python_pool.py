"""Isolated python steps: a warm pool of child processes.

Each child is a fresh interpreter (``subprocess``: fork+exec, never a plain fork of the
worker, which runs an event loop and threads) that loads ``python_exec.py`` by file path
and serves one request at a time over two pipes (see that module for the frames). Children
start lazily, one per concurrent call up to the pool size, and are reused.

Every child is owned by one daemon thread of the pool: it takes a call from the queue,
starts its child if it has none, sends the request and waits for the reply with poll(2),
on the reply pipe and on a pidfd, so the event loop never waits. The thread enforces the
call's timeout, so time spent queued for a free child does not count. Each child leads its
own process group; on timeout or cancellation the group gets SIGKILL, and the owning
thread reaps the child and starts a new one. A child that dies fails only its call. After a
MemoryError the child is replaced too (its heap may be spent).

Each child's address space is limited with RLIMIT_AS (``memory_mb``, default 1024 MiB,
0 for none), so a memory bomb ends in MemoryError inside the child, not in the worker
(children get MALLOC_ARENA_MAX=2, see ``_child_env``). On Linux a child also dies with the
worker (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import logging
import math
import os
import pickle
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from noetl.tools.base import ToolError
from noetl.tools.python_exec import HEADER, Reply

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 1024
START_SECONDS = 60.0
"""How long a new child may take to start (interpreter and imports); not part of a timeout."""

_MIB = 1024 * 1024
_EXIT_GRACE = 1.0
_REAP_SECONDS = 5.0
_JOIN_SECONDS = 5.0
_CHUNK = 1 << 20
_SMALL = 1 << 16
_EXEC_PATH = str(Path(__file__).with_name("python_exec.py"))
_BOOT = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('noetl_python_child', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = module\n"
    "spec.loader.exec_module(module)\n"
    "module.serve(sys.argv[2:])\n"
)


def default_pool_size() -> int:
    return max(2, os.cpu_count() or 4)


class PythonPool:
    """Child processes for isolated python steps: the settings, and the pool of children
    (started at the first call, stopped by close()). A worker owns one and hands it to its
    python tool; the module functions below use a default one (direct calls, tests)."""

    def __init__(self, pool_size: int | None = None, memory_mb: int | None = None) -> None:
        self.lock = threading.Lock()
        self.pool_size = default_pool_size()
        self.memory_mb = DEFAULT_MEMORY_MB
        self.pool: _Pool | None = None
        self.configure(pool_size, memory_mb)
        _instances.add(self)

    def get(self) -> _Pool:
        with self.lock:
            if self.pool is None:
                self.pool = _Pool(self.pool_size, self.memory_mb)
            return self.pool

    def take(self) -> _Pool | None:
        with self.lock:
            pool, self.pool = self.pool, None
            return pool

    def configure(self, pool_size: int | None = None, memory_mb: int | None = None) -> None:
        """Set the number of child processes and each one's memory limit in MiB (0: no
        limit). None leaves a setting as it is. A smaller pool retires idle children first,
        busy ones when their calls end; a new memory limit applies to each child before its
        next call (by replacing the child)."""
        if pool_size is not None and (isinstance(pool_size, bool) or pool_size < 1):
            raise ValueError(f"pool_size must be a positive integer, got {pool_size!r}")
        if memory_mb is not None and (isinstance(memory_mb, bool) or memory_mb < 0):
            raise ValueError(f"memory_mb must be a non-negative integer, got {memory_mb!r}")
        with self.lock:
            if pool_size is not None:
                self.pool_size = int(pool_size)
            if memory_mb is not None:
                self.memory_mb = int(memory_mb)
            if self.pool is not None:
                self.pool.memory_mb = self.memory_mb
                self.pool.resize(self.pool_size)

    def settings(self) -> dict[str, int]:
        """The current ``pool_size`` and ``memory_mb``."""
        with self.lock:
            return {"pool_size": self.pool_size, "memory_mb": self.memory_mb}

    async def run(
        self,
        code: str,
        inputs: Mapping[str, Any],
        *,
        step: str,
        libs: Mapping[str, str],
        context: Mapping[str, Any],
        limit_seconds: float,
    ) -> Reply:
        """Run the code in a child; its reply, or ToolError when the child fails or runs for
        longer than limit_seconds (counted from the start of the run, not the wait for a
        child)."""
        request = {"code": code, "inputs": inputs, "step": step, "libs": libs, "context": context}
        job = _Job(asyncio.get_running_loop(), request, limit_seconds)
        self.get().submit(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancel()
            raise

    async def close(self) -> None:
        """Stop every child and the threads that own them; the next call starts anew."""
        pool = self.take()
        if pool is None:
            return
        threads = pool.shutdown()
        if threads:
            await asyncio.get_running_loop().run_in_executor(None, _join, threads)


_instances: weakref.WeakSet[PythonPool] = weakref.WeakSet()
_current = PythonPool()


def default() -> PythonPool:
    """The pool of direct calls (a worker injects its own)."""
    return _current


def configure(pool_size: int | None = None, memory_mb: int | None = None) -> None:
    """`PythonPool.configure` on the default pool."""
    _current.configure(pool_size, memory_mb)


def settings() -> dict[str, int]:
    """The default pool's ``pool_size`` and ``memory_mb``."""
    return _current.settings()


async def run(
    code: str,
    inputs: Mapping[str, Any],
    *,
    step: str,
    libs: Mapping[str, str],
    context: Mapping[str, Any],
    limit_seconds: float,
) -> Reply:
    """`PythonPool.run` on the default pool."""
    return await _current.run(
        code, inputs, step=step, libs=libs, context=context, limit_seconds=limit_seconds
    )


async def close() -> None:
    """`PythonPool.close` on the default pool."""
    await _current.close()


def _join(threads: list[threading.Thread]) -> None:
    deadline = time.monotonic() + _JOIN_SECONDS
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0))


@atexit.register
def _kill_children_at_exit() -> None:
    for owner in list(_instances):
        pool = owner.pool
        if pool is not None:
            pool.shutdown()


class _Gone(Exception):
    """The child exited, or closed its end of a pipe."""


class _Late(Exception):
    """The deadline passed."""


class _BadReply(Exception):
    """The child wrote something that is not a reply to the request."""


class _Job:
    """One call: the request, the asyncio future it settles, and the child running it."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, request: dict[str, Any], timeout: float
    ) -> None:
        self.loop = loop
        self.future: asyncio.Future[Reply] = loop.create_future()
        self.request = request
        self.timeout = timeout
        self._lock = threading.Lock()
        self._cancelled = False
        self._child: _Child | None = None
        self._outcome: Reply | ToolError | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def payload(self) -> bytes:
        try:
            return pickle.dumps(self.request, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickling fails in many ways: TypeError, PicklingError, ...
            raise ToolError(
                f"python step input cannot be sent to an isolated process: {exc}"
            ) from None

    def attach(self, child: _Child) -> bool:
        """Mark the job running on child; False if it was cancelled."""
        with self._lock:
            if self._cancelled:
                return False
            self._child = child
            return True

    def detach(self) -> bool:
        """The job no longer runs on its child; True if it was cancelled meanwhile (and the
        child may have been sent SIGKILL, even after it replied)."""
        with self._lock:
            self._child = None
            return self._cancelled

    def cancel(self) -> None:
        """Called on the event loop: never blocks (a running child is only sent SIGKILL)."""
        with self._lock:
            self._cancelled = True
            child = self._child
        if child is not None:
            child.kill()

    def succeed(self, reply: Reply) -> None:
        self._outcome = reply

    def fail(self, error: ToolError) -> None:
        self._outcome = error

    def deliver(self) -> None:
        """Hand the outcome set by succeed() or fail() to the awaiting task."""
        outcome, self._outcome = self._outcome, None
        if outcome is None:  # delivered already, or cancelled before it ran
            return

        def settle() -> None:
            if self.future.done():  # cancelled
                return
            if isinstance(outcome, ToolError):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)

        try:
            self.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop closed while the code ran
            logger.debug("python step finished after its event loop closed")


class _Pool:
    """Threads that each own one child; calls queue when all are busy."""

    def __init__(self, size: int, memory_mb: int) -> None:
        self.size = size
        self.memory_mb = memory_mb
        self.closed = False
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        """Calls, and None for a thread to stop (shutdown, or a smaller pool)."""
        self._lock = threading.Lock()
        self._idle = 0
        self._retiring = 0
        self._threads: set[threading.Thread] = set()
        self._children: set[_Child] = set()
        self._names = itertools.count(1)

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self.closed:
                raise _closed()
            if self._idle <= 0 and len(self._threads) - self._retiring < self.size:
                name = f"noetl-python-process-{next(self._names)}"
                thread = threading.Thread(target=self._serve, name=name, daemon=True)
                self._threads.add(thread)
                self._idle += 1
                thread.start()
            self._idle -= 1
        self._jobs.put(job)

    def resize(self, size: int) -> None:
        with self._lock:
            self.size = size
            excess = len(self._threads) - self._retiring - size
            if excess <= 0 or self.closed:
                return
            self._retiring += excess
        for _ in range(excess):  # queued behind waiting calls; taken by idle threads first
            self._jobs.put(None)

    def shutdown(self) -> list[threading.Thread]:
        """Kill every child and tell every thread to stop; the threads to wait for."""
        with self._lock:
            self.closed = True
            threads = list(self._threads)
            children = list(self._children)
        for child in children:
            child.kill()
        for _ in threads:
            self._jobs.put(None)
        return threads

    def _serve(self) -> None:
        me = threading.current_thread()
        child: _Child | None = None
        stopped = False
        try:
            while (job := self._jobs.get()) is not None:
                child = self._handle_safely(job, child)
                with self._lock:
                    self._idle += 1  # before delivering: the next call finds it idle
                job.deliver()
                if child is None:  # replace a lost child now, not when the next call comes
                    child = self._spare()
            stopped = True
        finally:
            with self._lock:
                self._threads.discard(me)
                if stopped and not self.closed:  # the pool shrank; this thread was idle
                    self._retiring -= 1
                    self._idle -= 1
            if child is not None:
                self._drop(child, 0)

    def _handle_safely(self, job: _Job, child: _Child | None) -> _Child | None:
        try:
            return self._handle(job, child)
        except Exception as exc:  # a bug here must not strand the call or kill the thread
            logger.exception("python process pool failed a call")
            job.fail(ToolError(f"python process pool failed: {exc!r}", retryable=True))
            if child is not None:
                self._drop(child, 0)
            return None

    def _handle(self, job: _Job, child: _Child | None) -> _Child | None:
        """Run the job; the child to keep for the next one (None: it was lost)."""
        if self.closed:
            job.fail(_closed())
            return child
        if job.cancelled:
            return child
        try:
            if child is not None and child.memory_mb != self.memory_mb:
                self._drop(child, 0)
                child = None
            if child is None:
                child = self._start()
            payload = job.payload()
        except ToolError as exc:
            job.fail(exc)
            return child
        if not job.attach(child):
            return child
        outcome: Reply | Exception
        try:
            outcome = child.call(payload, job.timeout)
        except (_Late, _Gone, _BadReply, OSError) as exc:
            outcome = exc
        finally:
            cancelled = job.detach()
        if isinstance(outcome, Exception):
            job.fail(self._lost(child, outcome, job.timeout))
            return None
        if cancelled:  # cancelled as the reply came: the child may have been sent SIGKILL
            self._drop(child, 0)
            return None
        reply = outcome
        job.succeed(reply)
        if not reply.get("ok") and reply.get("details", {}).get("error_type") == "MemoryError":
            self._drop(child, 0)
            return None
        return child

    def _lost(self, child: _Child, exc: Exception, timeout: float) -> ToolError:
        """Drop a child whose call failed; the error for the call."""
        if isinstance(exc, _Late):
            self._drop(child, 0)
            return ToolError(f"python step timed out after {timeout:g} s", retryable=True)
        if isinstance(exc, _Gone):
            code = self._drop(child, _EXIT_GRACE)
            return _closed() if self.closed else _died(child, code)
        self._drop(child, 0)
        if isinstance(exc, _BadReply):
            return ToolError(f"python process sent an unreadable reply: {exc}")
        return ToolError(f"talking to the python process failed: {exc}", retryable=True)

    def _start(self) -> _Child:
        child = _Child.start(self.memory_mb)
        with self._lock:
            if not self.closed:
                self._children.add(child)
                return child
        child.stop(0)
        raise _closed()

    def _spare(self) -> _Child | None:
        if self.closed:
            return None
        try:
            return self._start()
        except ToolError as exc:
            if not self.closed:
                logger.warning("could not start a spare python process: %s", exc)
            return None

    def _drop(self, child: _Child, grace: float) -> int | None:
        code = child.stop(grace)
        with self._lock:
            self._children.discard(child)
        return code


def _closed() -> ToolError:
    return ToolError("the python process pool was shut down", retryable=True)


def _died(child: _Child, code: int | None) -> ToolError:
    if child.killed or code is None:
        message = "python process closed its pipe to the worker before returning a result"
    elif code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        hint = "; out of memory?" if -code == signal.SIGKILL else ""
        message = (
            f"python process was killed by signal {-code} ({name}{hint}) before returning a result"
        )
    else:
        message = f"python process exited with code {code} before returning a result"
    return ToolError(message, details={"exit_code": code, "pid": child.pid})


class _Child:
    """One child process and the parent's ends of its pipes (used by one thread at a time)."""

    def __init__(
        self, process: subprocess.Popen[bytes], requests: int, replies: int, memory_mb: int
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.memory_mb = memory_mb
        self.killed = False
        """Set when stop() had to kill a child that was still running."""
        self._requests = requests
        self._replies = replies
        self._pidfd = _pidfd(process.pid)
        self._fds = [requests, replies] + ([self._pidfd] if self._pidfd is not None else [])
        self._lock = threading.Lock()
        self._reaped = False
        self._ids = itertools.count(1)
        os.set_blocking(requests, False)
        os.set_blocking(replies, False)

    @classmethod
    def start(cls, memory_mb: int) -> _Child:
        """Start a child and wait until it is ready; ToolError if it cannot start."""
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        argv = [str(request_read), str(reply_write), str(os.getpid())]
        try:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
                [sys.executable, "-c", _BOOT, _EXEC_PATH, *argv],
                stdin=subprocess.DEVNULL,
                pass_fds=(request_read, reply_write),
                start_new_session=True,
                env=_child_env(memory_mb),
            )
        except OSError as exc:
            os.close(request_write)
            os.close(reply_read)
            raise ToolError(f"could not start a python process: {exc}", retryable=True) from None
        finally:
            os.close(request_read)
            os.close(reply_write)
        child = cls(process, request_write, reply_read, memory_mb)
        setup = {"sys_path": list(sys.path), "memory_bytes": memory_mb * _MIB or None}
        deadline = time.monotonic() + START_SECONDS
        try:
            child._send(0, pickle.dumps(setup), deadline)
            child._receive(0, deadline)
        except (_Gone, _Late, _BadReply, OSError) as exc:
            code = child.stop(_EXIT_GRACE if isinstance(exc, _Gone) else 0)
            reason = "it did not start in time" if isinstance(exc, _Late) else f"exit code {code}"
            raise ToolError(f"could not start a python process: {reason}", retryable=True) from None
        return child

    def call(self, payload: bytes, timeout: float) -> Reply:
        request_id = next(self._ids)
        deadline = time.monotonic() + timeout
        self._send(request_id, payload, deadline)
        return self._receive(request_id, deadline)

    def kill(self) -> None:
        """SIGKILL the child and its process group; safe from any thread, never blocks."""
        with self._lock:
            if self._reaped:  # its pid may belong to another process by now
                return
            for send in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    send(self.pid, signal.SIGKILL)

    def stop(self, grace: float) -> int | None:
        """Let the child exit for up to grace seconds, kill what is left of its group, reap
        it and close the pipes; its exit code (negative: a signal), None if it would not die."""
        if not self._exited(grace):
            self.killed = True
        self.kill()  # also whatever the code started in the child's process group
        code: int | None = None
        if self._exited(_REAP_SECONDS):
            with self._lock:
                code = self.process.wait()
                self._reaped = True
        else:
            logger.warning("python process %d did not exit after SIGKILL", self.pid)
        fds, self._fds, self._pidfd = self._fds, [], None
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        return code

    # -- frames -----------------------------------------------------------------------------

    def _send(self, request_id: int, payload: bytes, deadline: float) -> None:
        header = HEADER.pack(len(payload), request_id)
        for part in [header + payload] if len(payload) < _SMALL else [header, payload]:
            data = memoryview(part)
            while data:
                try:
                    written = os.write(self._requests, data[:_CHUNK])
                except BlockingIOError:
                    self._wait(self._requests, select.POLLOUT, deadline)
                    continue
                except BrokenPipeError:
                    raise _Gone from None
                data = data[written:]

    def _receive(self, request_id: int, deadline: float) -> Reply:
        length, reply_id = HEADER.unpack(self._read(HEADER.size, deadline))
        body = self._read(length, deadline)
        if reply_id != request_id:
            raise _BadReply(f"a reply to request {reply_id} while waiting for {request_id}")
        try:
            reply = json.loads(body)
        except ValueError as exc:
            raise _BadReply(str(exc)) from None
        if not isinstance(reply, dict):
            raise _BadReply(f"a {type(reply).__name__}, not an object")
        return reply

    def _read(self, size: int, deadline: float) -> bytes:
        parts: list[bytes] = []
        missing = size
        while missing:
            try:
                chunk = os.read(self._replies, min(missing, _CHUNK))
            except BlockingIOError:
                self._wait(self._replies, select.POLLIN, deadline)
                continue
            if not chunk:
                raise _Gone
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)

    def _wait(self, fd: int, event: int, deadline: float) -> None:
        """Until fd is ready for event; _Late at the deadline, _Gone when the child exits."""
        poller = select.poll()
        poller.register(fd, event)
        if self._pidfd is not None:
            poller.register(self._pidfd, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Late
            if self._pidfd is None:  # no pidfd: look at the child twice a second
                remaining = min(remaining, 0.5)
            ready = dict(poller.poll(math.ceil(remaining * 1000)))
            if fd in ready:
                return  # readable, writable, or closed: the read or write will tell
            if ready or (self._pidfd is None and self._exited(0)):
                raise _Gone

    def _exited(self, timeout: float) -> bool:
        """Whether the child has exited (without reaping it), waiting up to timeout."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG):
                    return True
            except ChildProcessError:  # reaped already
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._pidfd is not None:
                select.select([self._pidfd], [], [], remaining)
            else:
                time.sleep(min(remaining, 0.01))


def _child_env(memory_mb: int) -> dict[str, str] | None:
    """The worker's environment; under a memory limit, with few glibc malloc arenas.

    RLIMIT_AS counts address space, not memory used: by default glibc reserves 64 MiB per
    thread arena (up to 8 per CPU), so a library starting threads (duckdb, BLAS) could hit
    the limit while using little memory. The worker's own MALLOC_ARENA_MAX wins.
    """
    if not memory_mb or "MALLOC_ARENA_MAX" in os.environ:
        return None
    return {**os.environ, "MALLOC_ARENA_MAX": "2"}


def _pidfd(pid: int) -> int | None:
    """A pidfd for the child (Linux 5.3+): poll(2) reports its exit at once."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None
