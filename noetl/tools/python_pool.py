"""Isolated python steps: a warm pool of child processes.

Each child is a fresh interpreter (``subprocess``: fork+exec, never a plain fork of the
worker, which runs an event loop and threads) that loads ``python_exec.py`` by file path
and serves one request at a time over two pipes (see that module for the frames). Children
start lazily, one per concurrent call up to the pool size, and are reused.

A call talks to its child on the event loop that makes it: the loop watches the reply pipe
and a pidfd of the child (add_reader) and the call's deadline (a timer), so a step costs no
hop through a thread (a thread per child did that until issue 12: ~80 us of the worker's CPU
per call). The timeout counts from the request's sending, so time spent waiting for a free
child does not count. Starting a child and reaping one block, so they run on short-lived
daemon threads. Each child leads its own process group; on timeout or cancellation the
group gets SIGKILL, the child is reaped and a new one started. A child that dies fails
only its call. After a MemoryError the child is replaced too (its heap may be spent).

Each child's address space is limited with RLIMIT_AS (``memory_mb``, default 1024 MiB,
0 for none), so a memory bomb ends in MemoryError inside the child, not in the worker
(children get MALLOC_ARENA_MAX=2, see ``_child_env``). On Linux a child also dies with the
worker (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import itertools
import json
import logging
import math
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import orjson

from noetl.tools.base import ToolError
from noetl.tools.python_exec import HEADER, Reply

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_MB = 1024
START_SECONDS = 60.0
"""How long a new child may take to start (interpreter and imports); not part of a timeout."""

_T = TypeVar("_T")
_MIB = 1024 * 1024
_EXIT_GRACE = 1.0
_REAP_SECONDS = 5.0
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
        try:
            payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pickling fails in many ways: TypeError, PicklingError, ...
            raise ToolError(
                f"python step input cannot be sent to an isolated process: {exc}"
            ) from None
        return await self.get().call(payload, limit_seconds)

    async def close(self) -> None:
        """Stop every child; the next call starts anew."""
        pool = self.take()
        if pool is not None:
            await _off_loop(pool.shutdown)


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


class _Pool:
    """Children, idle or busy, and the calls waiting for one.

    A call runs on the event loop that makes it: it takes an idle child (or has one started),
    writes the request to the child's pipe and waits for the reply, the child's exit (a pidfd)
    and the deadline with the loop's own readers and timer (`_Exchange`). Starting and
    stopping a child block (an interpreter's start, a reap), so they run on short-lived
    daemon threads; a call never waits on a thread otherwise. The pool is shared by event
    loops (direct calls, tests): a call waiting for a child is woken on its own loop.
    """

    def __init__(self, size: int, memory_mb: int) -> None:
        self.size = size
        self.memory_mb = memory_mb
        self.closed = False
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._count = 0
        """Children counted against the size: idle, busy, or starting."""
        self._children: set[_Child] = set()
        """Every child started and not yet stopped (shutdown kills them)."""
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()

    async def call(self, payload: bytes, limit_seconds: float) -> Reply:
        """The child's reply to the request; ToolError when it fails or runs for longer than
        limit_seconds."""
        loop = asyncio.get_running_loop()
        child = await self._acquire(loop)
        kept: _Child | None = None  # given back for the next call; None: it is lost
        try:
            exchange = _Exchange(loop, child)
            try:
                exchange.start(payload, limit_seconds)
                reply = await exchange.future
            except asyncio.CancelledError:
                exchange.close()
                if exchange.replied():  # cancelled as the reply came: the child is fine
                    kept = child
                else:
                    child.kill()
                    _in_background(self._drop, child, 0)
                raise
            except Exception as exc:  # _Late, _Gone, _BadReply, OSError; or a bug here
                exchange.close()
                raise await self._lost(child, exc, limit_seconds) from None
            if not reply.get("ok") and reply.get("details", {}).get("error_type") == "MemoryError":
                _in_background(self._drop, child, 0)  # its heap may be spent
            else:
                kept = child
            return reply
        finally:
            self._release(kept)

    async def _acquire(self, loop: asyncio.AbstractEventLoop) -> _Child:
        """An idle child; else one started for this call (up to the size: the calls that
        come together get a child each, as many as the pool holds); else wait for a child
        to be given back."""
        while True:
            with self._lock:
                if self.closed:
                    raise _closed()
                while self._idle:
                    child = self._idle.pop()
                    if child.memory_mb == self.memory_mb:
                        return child
                    self._count -= 1  # started under another memory limit: replaced
                    _in_background(self._drop, child, 0)
                if self._count < self.size:
                    self._count += 1
                    mine: asyncio.Future[_Child] = loop.create_future()
                    _in_background(self._start, mine)
                    waiter = None
                else:
                    waiter = loop.create_future()
                    self._waiting.append(waiter)
            if waiter is None:
                return await mine  # cancelled: the child goes to the next call (_handover)
            try:
                await waiter
            except asyncio.CancelledError:
                with self._lock, contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
                if waiter.done() and not waiter.cancelled():  # woken: pass it on
                    self._wake(None)
                raise

    def _release(self, child: _Child | None) -> None:
        """Give a child back after a call (None: it was lost and a spare is started)."""
        with self._lock:
            if child is None:
                self._count -= 1
                if not self.closed and self._count < self.size:
                    self._count += 1  # replace a lost child now, not when the next call comes
                    _in_background(self._start)
                return
            if self.closed or self._count > self.size:  # the pool shrank
                self._count -= 1
                _in_background(self._drop, child, 0)
            else:
                self._idle.append(child)
        self._wake(None)

    def _wake(self, error: ToolError | None) -> None:
        """Tell the first waiting call to look again (or fail it with `error`)."""
        while True:
            with self._lock:
                if not self._waiting:
                    return
                waiter = self._waiting.popleft()
            try:
                waiter.get_loop().call_soon_threadsafe(self._woken, waiter, error)
            except RuntimeError:  # its event loop closed: the next one
                continue
            return

    def _woken(self, waiter: asyncio.Future[None], error: ToolError | None) -> None:
        if waiter.done():  # cancelled meanwhile: the news goes to the next one
            self._wake(error)
        elif error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(None)

    def _start(self, mine: asyncio.Future[_Child] | None = None) -> None:
        """On a thread: start a child for the call waiting on `mine` (or, without one, a
        spare: it becomes idle and a waiting call is woken); a failure to start fails that
        call, and a waiting call asks anew."""
        try:
            child = _Child.start(self.memory_mb)
        except ToolError as exc:
            with self._lock:
                self._count -= 1
            if mine is not None:
                _settle_threadsafe(mine, exc)
            elif not self.closed:
                logger.warning("could not start a spare python process: %s", exc)
            self._wake(None)  # a slot is free: a waiting call may start a child
            return
        with self._lock:
            closed = self.closed
            if closed:
                self._count -= 1
            else:
                self._children.add(child)
        if closed:
            child.stop(0)
            if mine is not None:
                _settle_threadsafe(mine, _closed())
            self._wake(_closed())
        elif mine is None or not _settle_threadsafe(mine, child, self._release):
            self._release(child)  # a spare, or its call's loop is gone

    async def _lost(self, child: _Child, exc: Exception, limit_seconds: float) -> ToolError:
        """Drop a child whose call failed; the error for the call."""
        grace = _EXIT_GRACE if isinstance(exc, _Gone) else 0
        code = await _off_loop(self._drop, child, grace)
        if isinstance(exc, _Late):
            return ToolError(f"python step timed out after {limit_seconds:g} s", retryable=True)
        if isinstance(exc, _Gone):
            return _closed() if self.closed else _died(child, code)
        if isinstance(exc, _BadReply):
            return ToolError(f"python process sent an unreadable reply: {exc}")
        return ToolError(f"talking to the python process failed: {exc}", retryable=True)

    def _drop(self, child: _Child, grace: float) -> int | None:
        code = child.stop(grace)
        with self._lock:
            self._children.discard(child)
        return code

    def resize(self, size: int) -> None:
        with self._lock:
            self.size = size
            if self.closed:
                return
            while self._count > size and self._idle:  # idle ones first; busy ones on release
                self._count -= 1
                _in_background(self._drop, self._idle.pop(0), 0)
            room = size - self._count
        for _ in range(max(room, 0)):  # waiting calls may start children now
            self._wake(None)

    def shutdown(self) -> None:
        """Kill every child (a call running on one fails) and fail the waiting calls."""
        with self._lock:
            self.closed = True
            children = list(self._children)
            idle, self._idle = self._idle, []
            waiting = len(self._waiting)
        for child in children:
            child.kill()
        for child in idle:
            self._drop(child, 0)
        for _ in range(waiting):
            self._wake(_closed())


class _Exchange:
    """One request and its reply over a child's pipes, on the event loop: the loop watches the
    reply pipe, the request pipe while the request does not fit in it, and the child's pidfd
    (without one, the child is looked at twice a second); a timer is the deadline. `future`
    gets the reply, or _Late, _Gone, _BadReply or an OSError."""

    def __init__(self, loop: asyncio.AbstractEventLoop, child: _Child) -> None:
        self.loop = loop
        self.child = child
        self.future: asyncio.Future[Reply] = loop.create_future()
        self.request_id = next(child.ids)
        self.unsent = memoryview(b"")
        self.rest = b""
        self.parts: list[bytes] = []
        self.missing = HEADER.size
        self.length: int | None = None
        self.writing = False
        self.closed = False
        self.watch: asyncio.TimerHandle | None = None
        self.timer: asyncio.TimerHandle | None = None

    def start(self, payload: bytes, limit_seconds: float) -> None:
        """Watch the child and send the request."""
        header = HEADER.pack(len(payload), self.request_id)
        small = len(payload) < _SMALL
        self.unsent = memoryview(header + payload if small else header)
        self.rest = b"" if small else payload
        self.timer = self.loop.call_later(limit_seconds, self._finish, _Late())
        self.child.watch(self.loop, self)
        if self.child.pidfd is None:
            self.watch = self.loop.call_later(0.5, self._look)
        self._write()

    def replied(self) -> bool:
        return self.future.done() and not self.future.cancelled() and not self.future.exception()

    def close(self, *, keep_watching: bool = False) -> None:
        """Stop watching the child's pipes (before it is stopped or killed), or, after its
        reply (`keep_watching`), only stop hearing of them: the loop goes on watching them for
        the child's next call (`_Child.watch`)."""
        if self.closed:
            return
        self.closed = True
        if keep_watching:
            self.child.exchange = None
        else:
            self.child.unwatch()
        if self.writing:
            self.loop.remove_writer(self.child.requests)
        if self.watch is not None:
            self.watch.cancel()
        if self.timer is not None:
            self.timer.cancel()

    def _finish(self, outcome: Reply | BaseException) -> None:
        self.close(keep_watching=not isinstance(outcome, BaseException))
        if self.future.done():
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)

    def _write(self) -> None:
        while self.unsent:
            try:
                written = os.write(self.child.requests, self.unsent[:_CHUNK])
            except BlockingIOError:
                if not self.writing:
                    self.writing = True
                    _unheard(self.loop, self.child.requests)
                    self.loop.add_writer(self.child.requests, self._write)
                return
            except BrokenPipeError:
                self._finish(_Gone())
                return
            except OSError as exc:
                self._finish(exc)
                return
            self.unsent = self.unsent[written:]
            if not self.unsent and self.rest:
                self.unsent, self.rest = memoryview(self.rest), b""
        if self.writing:
            self.writing = False
            self.loop.remove_writer(self.child.requests)

    def _read(self) -> None:
        """The reply pipe is readable: read on while it holds more of the frame (a header and
        its body come in one write: one turn of the loop for both)."""
        while self._readable():
            pass

    def _readable(self) -> bool:
        """Read what the reply pipe holds of the frame; False when it holds nothing now. The
        first read asks for a small frame's whole length: the child writes one in one go."""
        if self.closed:
            return False
        try:
            wanted = _SMALL if self.length is None else min(self.missing, _CHUNK)
            chunk = os.read(self.child.replies, wanted)
        except BlockingIOError:
            return False
        except OSError as exc:
            self._finish(exc)
            return False
        if not chunk:
            self._finish(_Gone())
            return False
        self.parts.append(chunk)
        if self.length is None:
            data = b"".join(self.parts)
            if len(data) < HEADER.size:
                self.parts = [data]
                return True
            length, reply_id = HEADER.unpack_from(data)
            if reply_id != self.request_id:
                message = f"a reply to request {reply_id} while waiting for {self.request_id}"
                self._finish(_BadReply(message))
                return False
            body = data[HEADER.size :]
            if len(body) > length:
                self._finish(_BadReply("more bytes than its frame holds"))
                return False
            self.length, self.missing, self.parts = length, length - len(body), [body]
        else:
            self.missing -= len(chunk)
        if self.missing:
            return True
        self._finish(_decode(b"".join(self.parts)))
        return False

    def _exited(self) -> None:
        """The child exited: what it wrote before still counts."""
        while self._readable():
            pass
        self._finish(_Gone())

    def _look(self) -> None:
        if self.child.exited(0):
            self._exited()
        else:
            self.watch = self.loop.call_later(0.5, self._look)


def _decode(body: bytes) -> Reply | _BadReply:
    """orjson, but the standard library's json for a reply that may hold an integer beyond 64
    bits (a run of 19 digits or more: orjson reads such an integer as a float, and it must
    reach the worker exactly, to fail its step by the codec's number rule, `noetl.jsonfast`)
    or that orjson refuses (a lone surrogate in a string)."""
    try:
        if body.translate(_DIGITS).find(_LONG_NUMBER) == -1:
            try:
                reply = orjson.loads(body)
            except orjson.JSONDecodeError:
                reply = json.loads(body)
        else:
            reply = json.loads(body)
    except ValueError as exc:
        return _BadReply(str(exc))
    if not isinstance(reply, dict):
        return _BadReply(f"a {type(reply).__name__}, not an object")
    return reply


_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_NUMBER = b"0" * 19
"""A reply with every digit made 0 and every other byte a space holds a run of 19 digits
where it holds `_LONG_NUMBER` (a translation and a search in C: a regular expression's
search cost more than orjson's whole read of a small reply)."""


def _settle_threadsafe(
    future: asyncio.Future[Any],
    outcome: Any,
    unclaimed: Callable[[Any], None] | None = None,
) -> bool:
    """Settle a future of any event loop from any thread: its result, or its exception when
    `outcome` is one. A result nobody takes any more (the future was cancelled meanwhile)
    goes to `unclaimed`. False when the future's loop is closed."""

    def settle() -> None:
        if future.done():
            if unclaimed is not None and not isinstance(outcome, BaseException):
                unclaimed(outcome)
        elif isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    try:
        future.get_loop().call_soon_threadsafe(settle)
    except RuntimeError:  # the loop closed
        return False
    return True


def _unheard(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Drop what `loop` holds for `fd` before watching it. A callback some code left on an fd
    it closed stays in asyncio's selector map under that number (the kernel forgot it with the
    fd): once a child's new pipe gets the number, `add_reader` only swapped the callback and the
    pipe was never watched; the call hung until its time limit (seen once in CI). Any entry
    for an fd this pool just opened is such a leftover."""
    loop.remove_reader(fd)
    loop.remove_writer(fd)


def _in_background(func: Callable[..., Any], *args: Any) -> None:
    """Run func on a daemon thread (starting or stopping a child blocks)."""
    threading.Thread(target=func, args=args, name="noetl-python-process", daemon=True).start()


def _off_loop(func: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
    """func on a daemon thread, awaited (a hung reap never blocks the worker's exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def target() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (func(*args), None)
        except Exception as exc:  # handed to the awaiting call
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, *outcome)

    _in_background(target)
    return future


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
    """One child process and the parent's ends of its pipes (used by one call at a time)."""

    def __init__(
        self, process: subprocess.Popen[bytes], requests: int, replies: int, memory_mb: int
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.memory_mb = memory_mb
        self.killed = False
        """Set when stop() had to kill a child that was still running."""
        self.requests = requests
        self.replies = replies
        self.pidfd = _pidfd(process.pid)
        self._fds = [requests, replies] + ([self.pidfd] if self.pidfd is not None else [])
        self._lock = threading.Lock()
        self._reaped = False
        self.ids = itertools.count(1)
        self.watched: asyncio.AbstractEventLoop | None = None
        """The loop whose readers watch the reply pipe and the pidfd (kept between calls)."""
        self.watched_from = 0  # that loop's thread
        self.exchange: _Exchange | None = None  # the call they report to; None while idle
        os.set_blocking(requests, False)
        os.set_blocking(replies, False)

    @classmethod
    def start(cls, memory_mb: int) -> _Child:
        """Start a child and wait until it is ready; ToolError if it cannot start."""
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        argv = [str(request_read), str(reply_write), str(os.getpid())]
        try:
            process = _SPAWNER.submit(
                subprocess.Popen,
                [sys.executable, "-c", _BOOT, _EXEC_PATH, *argv],
                stdin=subprocess.DEVNULL,
                pass_fds=(request_read, reply_write),
                start_new_session=True,
                env=_child_env(memory_mb),
            ).result()
        except (OSError, RuntimeError) as exc:  # RuntimeError: the interpreter is exiting
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

    # -- the watch -----------------------------------------------------------------------

    def watch(self, loop: asyncio.AbstractEventLoop, exchange: _Exchange) -> None:
        """Report the reply pipe's data and the child's exit to `exchange`, from readers of
        `loop` (called on its thread). The readers stay between the child's calls on one
        loop: registering and removing two of them cost ~18 us of the worker's CPU per call
        (uvloop starts a poll handle with three system calls)."""
        if self.watched is not loop:
            self.unwatch()
            _unheard(loop, self.replies)
            loop.add_reader(self.replies, self._replies_ready)
            if self.pidfd is not None:
                _unheard(loop, self.pidfd)
                loop.add_reader(self.pidfd, self._exit_ready)
            self.watched, self.watched_from = loop, threading.get_ident()
        self.exchange = exchange

    def unwatch(self) -> None:
        """Remove the readers (before the pipes close, and before another loop watches):
        here on the loop's thread or while it does not run, else on its thread, waited for."""
        loop, self.watched, self.exchange = self.watched, None, None
        if loop is None or loop.is_closed():  # a closed loop's readers are gone with it
            return
        if self.watched_from == threading.get_ident() or not loop.is_running():
            self._remove_readers(loop)
            return
        removed = threading.Event()

        def remove() -> None:
            self._remove_readers(loop)
            removed.set()

        try:
            loop.call_soon_threadsafe(remove)
        except RuntimeError:  # closed meanwhile
            return
        if not removed.wait(_REAP_SECONDS):
            logger.warning("python process %d: its event loop did not stop watching it", self.pid)

    def _remove_readers(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(ValueError, OSError, RuntimeError):  # gone with the loop
            loop.remove_reader(self.replies)
            if self.pidfd is not None:
                loop.remove_reader(self.pidfd)

    def _replies_ready(self) -> None:
        if self.exchange is not None:
            self.exchange._read()
        else:  # idle: it exited, or wrote out of turn; its next call finds out
            self.unwatch()

    def _exit_ready(self) -> None:
        if self.exchange is not None:
            self.exchange._exited()
        else:
            self.unwatch()

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
        self.unwatch()
        if not self.exited(grace):
            self.killed = True
        self.kill()  # also whatever the code started in the child's process group
        code: int | None = None
        if self.exited(_REAP_SECONDS):
            with self._lock:
                code = self.process.wait()
                self._reaped = True
        else:
            logger.warning("python process %d did not exit after SIGKILL", self.pid)
        fds, self._fds, self.pidfd = self._fds, [], None
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
                    written = os.write(self.requests, data[:_CHUNK])
                except BlockingIOError:
                    self._wait(self.requests, select.POLLOUT, deadline)
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
                chunk = os.read(self.replies, min(missing, _CHUNK))
            except BlockingIOError:
                self._wait(self.replies, select.POLLIN, deadline)
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
        if self.pidfd is not None:
            poller.register(self.pidfd, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Late
            if self.pidfd is None:  # no pidfd: look at the child twice a second
                remaining = min(remaining, 0.5)
            ready = dict(poller.poll(math.ceil(remaining * 1000)))
            if fd in ready:
                return  # readable, writable, or closed: the read or write will tell
            if ready or (self.pidfd is None and self.exited(0)):
                raise _Gone

    def exited(self, timeout: float) -> bool:
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
            if self.pidfd is not None:
                select.select([self.pidfd], [], [], remaining)
            else:
                time.sleep(min(remaining, 0.01))


_SPAWNER = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="noetl-python-spawner")
"""The one thread that forks the children. A child dies with the thread that forked it
(PR_SET_PDEATHSIG follows the thread, not the process), and children are started on
short-lived threads: this one lives as long as the worker."""


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
