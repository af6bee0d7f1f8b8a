"""The ``python`` tool: run user code in a child process, or on a thread of the worker.

Config: ``code`` (alias ``script``; or upstream's ``script: {uri, source: {type}}`` block, see
``script_source``), ``timeout_seconds`` (default 300), ``libs`` (alias -> module to import),
``isolated`` (default true), ``args`` (inputs given in the tool, under the step's ``input``),
``context`` (values added to the ``context`` global). Inputs are global variables, and
``input_data`` and ``args`` hold them all; ``context`` holds ``execution_id``, ``step``,
``input`` and the tool's ``context`` values.
The result is, in this order: the value of a top-level ``return``; the return of
``main(...)`` called with the inputs matching its parameters; the global ``result``; else
None. It is made JSON-ready (see ``python_exec.to_json``).

Isolated (the default): the code runs in a warm, reused child process (``python_pool``):
a timeout kills the child and its process group; a child that exits, crashes or is killed
fails only its step; each child's memory is limited (``configure(memory_mb=...)``, default
1024 MiB). A child's working directory and environment are put back after each call; its
imported modules stay (a warm child imports ``libs`` once). Inputs are pickled to the child,
so they must be picklable (the engine's JSON values are). The timeout counts from the start
of the run in a child, not the wait for a free one (``configure(pool_size=...)``).

``isolated: false``: the code runs in-process on a daemon thread (faster; for trusted code).
A thread cannot be killed, so a timed-out call fails the step but its code keeps running
until it returns. Both modes run the same ``python_exec.run_code``.

``env`` is not applied in either mode.

stdout/stderr of the code are captured per call (in-process: sys.stdout and sys.stderr are
replaced by routers that send a running call's writes to that call's buffer and pass every
other write through). Output is logged at DEBUG, recorded as the command's output
(``noetl.tools.output``, with the traceback of a failure on stderr) and, on failure, put in
the error's details; it is never part of the result.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import queue
import re
import textwrap
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from noetl.tools import output, python_pool
from noetl.tools.base import ToolCall, ToolError
from noetl.tools.python_exec import STEP_MODULE, Reply, ResultError, run_code
from noetl.tools.python_exec import to_json as _to_json
from noetl.tools.python_pool import configure
from noetl.tools.script_source import load_script, source_type

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0
_T = TypeVar("_T")

__all__ = [
    "DEFAULT_TIMEOUT",
    "STEP_MODULE",
    "PythonRun",
    "PythonTool",
    "configure",
    "execute_python",
    "to_json",
]


@dataclass(frozen=True)
class PythonRun:
    """The outcome of one successful run."""

    value: Any
    stdout: str
    stderr: str


class PythonTool:
    """Runs ``code`` with the call's inputs; see the module docstring."""

    kind = "python"
    default_timeout = DEFAULT_TIMEOUT

    def __init__(self, pool: python_pool.PythonPool | None = None) -> None:
        self.pool = pool or python_pool.default()

    async def run(self, call: ToolCall) -> Any:
        script = call.config.get("script")
        if "code" not in call.config and isinstance(script, Mapping):
            if source_type(script) != "inline":
                code = textwrap.dedent(await load_script(script, "python"))
            else:
                code = _source(call.config)
        else:
            code = _source(call.config)
        timeout = call.time_limit(DEFAULT_TIMEOUT)
        libs = _libs(call.config.get("libs"))
        isolated = _isolated(call.config.get("isolated", True))
        if call.config.get("env"):
            logger.warning("python step %s: env is not applied to python code", call.step)
        inputs = {**_mapping(call.config.get("args"), "args"), **call.input}
        context = {
            **_mapping(call.config.get("context"), "context"),
            "execution_id": call.execution_id,
            "step": call.step,
            "input": inputs,
        }
        if isolated:
            reply = await self.pool.run(
                code, inputs, step=call.where, libs=libs, context=context, limit_seconds=timeout
            )
        else:
            future = _in_daemon_thread(
                lambda: run_code(code, inputs, step=call.where, libs=libs, context=context),
                name=f"noetl-python-{call.step}",
            )
            try:
                reply = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise ToolError(
                    f"python step timed out after {timeout:g} s", retryable=True
                ) from None
        try:
            if reply.get("ok"):
                return reply.get("value")
            raise _error(reply)
        finally:
            _log_output(call.step, reply)

    async def close(self) -> None:
        """Stop the child processes (``close_tools`` calls this); the next call starts anew."""
        await self.pool.close()


def execute_python(
    code: str,
    inputs: Mapping[str, Any],
    *,
    step: str = "python",
    libs: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> PythonRun:
    """Run code synchronously in this thread with captured stdio; raise ToolError on failure."""
    return _outcome(run_code(code, inputs, step=step, libs=libs, context=context))


def to_json(value: Any) -> Any:
    """Make a result JSON-serialisable (see ``python_exec.to_json``); ToolError if circular."""
    try:
        return _to_json(value)
    except ResultError as exc:
        raise ToolError(str(exc)) from None


def _outcome(reply: Reply) -> PythonRun:
    if reply.get("ok"):
        return PythonRun(reply.get("value"), reply.get("stdout", ""), reply.get("stderr", ""))
    raise _error(reply)


def _error(reply: Reply) -> ToolError:
    return ToolError(
        str(reply.get("message")),
        retryable=bool(reply.get("retryable")),
        details=reply.get("details") or {},
    )


def _source(config: Mapping[str, Any]) -> str:
    raw = config.get("code", config.get("script"))
    if isinstance(raw, Mapping):  # legacy: script: {uri: inline, source: {type: inline, code}}
        source = raw.get("source", raw)
        kind = source.get("type", "inline") if isinstance(source, Mapping) else None
        if kind != "inline":
            raise ToolError(f"python script source type {kind!r} is not supported")
        raw = source.get("code")
    if not isinstance(raw, str) or not raw or raw.isspace():  # (strip() would copy it)
        raise ToolError("python tool needs `code` (or `script`) with the source to run")
    return _dedented(raw)


@functools.lru_cache(maxsize=256)
def _dedented(code: str) -> str:
    """textwrap.dedent, once per source (the steps of a chain or a loop share theirs)."""
    return textwrap.dedent(code)


def _mapping(raw: Any, name: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ToolError(f"python {name} must be a mapping, got {type(raw).__name__}")
    return dict(raw)


def _isolated(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in {"true", "false"}:
        return raw.strip().lower() == "true"
    raise ToolError(f"isolated must be true or false, got {raw!r}")


_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _libs(raw: Any) -> dict[str, str]:
    """``libs`` as alias -> module (``module:attribute`` for upstream's ``{from, import}``); a
    list of module names imports each by its name. A list item that is no module name (e.g.
    ``psycopg2-binary``) names a package the worker's Python must already have: nothing is
    installed, and the code imports what it needs itself."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        libs: dict[str, str] = {}
        for alias, module in raw.items():
            if isinstance(module, Mapping) and module.get("from") and module.get("import"):
                libs[str(alias)] = f"{module['from']}:{module['import']}"
            elif isinstance(module, str):
                libs[str(alias)] = module
            else:
                raise ToolError(f"libs.{alias} must be a module name or {{from, import}}")
        return libs
    if isinstance(raw, list) and all(isinstance(module, str) for module in raw):
        return {module: module for module in raw if _MODULE_NAME.match(module)}
    raise ToolError(f"libs must map names to modules, got {raw!r}")


def _log_output(step: str, reply: Reply) -> None:
    details = reply.get("details") or {}
    stdout = reply.get("stdout", details.get("stdout", ""))
    stderr = reply.get("stderr", details.get("stderr", ""))
    output.record("stdout", stdout)
    output.record("stderr", stderr + (details.get("traceback") or ""))
    if stdout:
        logger.debug("python step %s stdout:\n%s", step, stdout)
    if stderr:
        logger.debug("python step %s stderr:\n%s", step, stderr)


def _in_daemon_thread(func: Callable[[], _T], *, name: str) -> asyncio.Future[_T]:
    """Run func on a daemon thread (unlike asyncio.to_thread, a hung call never blocks exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: _T | None, error: BaseException | None) -> None:
        if future.done():  # cancelled, e.g. timed out
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)  # type: ignore[arg-type]

    def target() -> None:
        try:
            value = context.run(func)
        except BaseException as exc:  # handed to the awaiting task
            outcome: tuple[_T | None, BaseException | None] = (None, exc)
        else:
            outcome = (value, None)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed while the code ran
            logger.debug("python step thread %s finished after its event loop closed", name)

    _THREADS.submit(target)
    return future


class _DaemonPool:
    """Reused daemon threads: no thread start per call, and a hung call never blocks exit.

    A new thread starts only when none is idle, up to `limit`; past that, calls queue.
    """

    def __init__(self, limit: int = 64) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._limit = limit

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle == 0 and self._threads < self._limit:
                self._threads += 1
                self._idle += 1
                name = f"noetl-python-{self._threads}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()
            self._idle -= 1
        self._jobs.put(job)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            job()
            with self._lock:
                self._idle += 1


_THREADS = _DaemonPool()
