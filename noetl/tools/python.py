"""The ``python`` tool: run user code on a thread so the event loop stays free.

Config: ``code`` (alias ``script``), ``timeout_seconds``, ``libs`` (alias ->
module to import). Inputs are global variables, and ``input_data`` holds them
all. The result is, in this order: the value of a top-level ``return``; the
return of ``main(...)`` called with the inputs matching its parameters; the
global ``result``; else None.

The code runs in-process on a daemon thread. A thread cannot be killed, so a
timed-out call fails the step but its code keeps running until it returns;
process isolation comes later. For the same reason ``env`` is not applied.

stdout/stderr: on first use sys.stdout and sys.stderr are replaced by routers
that send a running call's writes to that call's buffer (per thread) and pass
every other write through. Output is logged at DEBUG and, on failure, put in
the error's details; it is never part of the result.
"""

from __future__ import annotations

import ast
import asyncio
import contextvars
import importlib
import inspect
import itertools
import json
import keyword
import linecache
import logging
import math
import queue
import sys
import textwrap
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar, cast

from noetl.tools.base import ToolCall, ToolError

logger = logging.getLogger(__name__)

STEP_MODULE = "noetl_step"
"""``__name__`` seen by user code (not ``__main__``, so a main guard does not call main twice)."""

_ENTRY = "__noetl_step__"
_call_ids = itertools.count(1)
_T = TypeVar("_T")
_MAX_CAPTURED_CHARS = 1_000_000
_NEW_SCOPE = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


@dataclass(frozen=True)
class PythonRun:
    """The outcome of one successful run."""

    value: Any
    stdout: str
    stderr: str


class PythonTool:
    """Runs ``code`` with the call's inputs; see the module docstring."""

    kind = "python"

    async def run(self, call: ToolCall) -> Any:
        code = _source(call.config)
        timeout = _timeout(call.config.get("timeout_seconds"))
        libs = _libs(call.config.get("libs"))
        if call.config.get("env"):
            logger.warning("python step %s: env is not applied to in-process code", call.step)
        inputs = dict(call.input)
        context = {"execution_id": call.execution_id, "step": call.step, "input": inputs}
        future = _in_daemon_thread(
            lambda: execute_python(code, inputs, step=call.step, libs=libs, context=context),
            name=f"noetl-python-{call.step}",
        )
        try:
            outcome = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ToolError(f"python step timed out after {timeout:g} s", retryable=True) from None
        except ToolError as exc:
            _log_output(call.step, exc.details.get("stdout", ""), exc.details.get("stderr", ""))
            raise
        _log_output(call.step, outcome.stdout, outcome.stderr)
        return outcome.value


def execute_python(
    code: str,
    inputs: Mapping[str, Any],
    *,
    step: str = "python",
    libs: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
) -> PythonRun:
    """Run code synchronously with captured stdio; raise ToolError on failure."""
    filename = f"<python step {step} #{next(_call_ids)}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    error: ToolError | None = None
    value: Any = None
    try:
        with captured_stdio() as (stdout, stderr):
            try:
                value = to_json(_evaluate(code, inputs, filename, libs or {}, context or {}))
            except ToolError as exc:
                error = exc
            except BaseException as exc:  # user code may raise anything
                error = _tool_error(exc, filename)
    finally:
        linecache.cache.pop(filename, None)
    if error is not None:
        error.details.update(stdout=stdout.text(), stderr=stderr.text())
        raise error
    return PythonRun(value, stdout.text(), stderr.text())


def to_json(value: Any) -> Any:
    """Make a result JSON-serialisable.

    Tuples and sets become lists (sets sorted by their JSON text), mapping
    keys become strings, and anything else JSON cannot hold (datetime,
    Decimal, NaN, objects) becomes ``str(value)``.
    """
    return _json_ready(value, set())


def _json_ready(value: Any, active: set[int]) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return _json_container(value, active)
    return str(value)


def _json_container(value: Any, active: set[int]) -> Any:
    if id(value) in active:
        raise ToolError("python step result is not JSON-serialisable: circular reference")
    active.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {
                key if isinstance(key, str) else str(key): _json_ready(item, active)
                for key, item in value.items()
            }
        items = [_json_ready(item, active) for item in value]
        if isinstance(value, set | frozenset):
            items.sort(key=lambda item: json.dumps(item, sort_keys=True))
        return items
    finally:
        active.discard(id(value))


def _evaluate(
    code: str,
    inputs: Mapping[str, Any],
    filename: str,
    libs: Mapping[str, str],
    context: Mapping[str, Any],
) -> Any:
    tree = ast.parse(code, filename=filename)
    namespace: dict[str, Any] = {
        "__name__": STEP_MODULE,
        "input_data": dict(inputs),
        "context": dict(context),  # execution_id, step, input: what the step runs in
    }
    namespace.update(_import_libs(libs))
    namespace.update(inputs)
    top_level = list(_top_level_nodes(tree))
    if any(isinstance(node, ast.Return) for node in top_level):
        declared_global = {
            name for node in top_level if isinstance(node, ast.Global) for name in node.names
        }
        return _run_as_function(tree, filename, namespace, inputs, declared_global)
    exec(compile(tree, filename, "exec"), namespace)
    main = namespace.get("main")
    if callable(main):
        return _call_main(main, inputs)
    return namespace.get("result")


def _top_level_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """Nodes in the module's own scope (not inside def, class or lambda)."""
    for child in ast.iter_child_nodes(node):
        yield child
        if not isinstance(child, _NEW_SCOPE):
            yield from _top_level_nodes(child)


def _run_as_function(
    tree: ast.Module,
    filename: str,
    namespace: dict[str, Any],
    inputs: Mapping[str, Any],
    declared_global: set[str],
) -> Any:
    """Wrap the module body in a function; inputs are its keyword parameters.

    Parameters (not just globals) let the code rebind an input, e.g.
    ``count = count + 1``.
    """
    names = [
        name
        for name in dict.fromkeys(["input_data", *inputs])
        if name.isidentifier() and not keyword.iskeyword(name) and name not in declared_global
    ]
    arguments = ast.arguments(
        posonlyargs=[],
        args=[],
        vararg=None,
        kwonlyargs=[ast.arg(arg=name) for name in names],
        kw_defaults=[None] * len(names),
        kwarg=None,
        defaults=[],
    )
    function = ast.FunctionDef(
        name=_ENTRY, args=arguments, body=tree.body, decorator_list=[], returns=None
    )
    module = ast.Module(body=[function], type_ignores=[])
    ast.copy_location(function, tree.body[0])
    ast.fix_missing_locations(module)
    exec(compile(module, filename, "exec"), namespace)
    entry = namespace.pop(_ENTRY)
    return entry(**{name: namespace[name] for name in names})


def _call_main(main: Callable[..., Any], inputs: Mapping[str, Any]) -> Any:
    """Call main with the inputs its parameters name; ``input_data`` gets them all."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    takes_all = False
    positional_gap = False
    for parameter in inspect.signature(main).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            takes_all = True
            continue
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if parameter.name in inputs:
            value = inputs[parameter.name]
        elif parameter.name == "input_data":
            value = dict(inputs)
        else:
            positional_gap |= parameter.kind is inspect.Parameter.POSITIONAL_ONLY
            continue
        if parameter.kind is not inspect.Parameter.POSITIONAL_ONLY:
            kwargs[parameter.name] = value
        elif not positional_gap:
            args.append(value)
    if takes_all:
        kwargs.update({name: value for name, value in inputs.items() if name not in kwargs})
    value = main(*args, **kwargs)
    if inspect.iscoroutine(value):
        return asyncio.run(value)
    return value


def _import_libs(libs: Mapping[str, str]) -> dict[str, Any]:
    return {alias: importlib.import_module(module) for alias, module in libs.items()}


def _tool_error(exc: BaseException, filename: str) -> ToolError:
    """A ToolError whose message is the traceback's last line."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        message = f"{type(exc).__name__}: {exc.msg} (line {exc.lineno})"
    else:
        message = traceback.format_exception_only(type(exc), exc)[0].strip()
        message = message.removeprefix(f"{STEP_MODULE}.")
    details = {
        "error_type": type(exc).__name__,
        "traceback": "".join(traceback.format_exception(type(exc), exc, tb)),
    }
    return ToolError(message, details=details)


def _source(config: Mapping[str, Any]) -> str:
    raw = config.get("code", config.get("script"))
    if isinstance(raw, Mapping):  # legacy: script: {uri: inline, source: {type: inline, code}}
        source = raw.get("source", raw)
        kind = source.get("type", "inline") if isinstance(source, Mapping) else None
        if kind != "inline":
            raise ToolError(f"python script source type {kind!r} is not supported")
        raw = source.get("code")
    if not isinstance(raw, str) or not raw.strip():
        raise ToolError("python tool needs `code` (or `script`) with the source to run")
    return textwrap.dedent(raw)


def _timeout(raw: Any) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value) or value <= 0:
        raise ToolError(f"timeout_seconds must be a positive number, got {raw!r}")
    return value


def _libs(raw: Any) -> dict[str, str]:
    """``libs`` as alias -> module; a list of module names imports each by its name."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {str(alias): str(module) for alias, module in raw.items()}
    if isinstance(raw, list) and all(isinstance(module, str) for module in raw):
        return {module: module for module in raw}
    raise ToolError(f"libs must map names to modules, got {raw!r}")


def _log_output(step: str, stdout: str, stderr: str) -> None:
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

    _POOL.submit(target)
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


_POOL = _DaemonPool()


class _Capture:
    """One call's stdout or stderr, kept up to a size limit."""

    def __init__(self, limit: int = _MAX_CAPTURED_CHARS) -> None:
        self._parts: list[str] = []
        self._room = limit
        self._dropped = 0

    def write(self, text: str) -> int:
        kept = text[: max(self._room, 0)]
        self._parts.append(kept)
        self._room -= len(kept)
        self._dropped += len(text) - len(kept)
        return len(text)

    def text(self) -> str:
        text = "".join(self._parts)
        if self._dropped:
            text += f"\n[{self._dropped} more characters not captured]"
        return text


_capturing = threading.local()
_install_lock = threading.Lock()


class _StreamRouter:
    """Stands in for sys.stdout/sys.stderr: a capturing thread writes to its capture."""

    def __init__(self, name: str, fallback: TextIO) -> None:
        self._name = name
        self._fallback = fallback

    def write(self, text: str) -> int:
        capture: _Capture | None = getattr(_capturing, self._name, None)
        if capture is not None:
            return capture.write(text)
        return self._fallback.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if getattr(_capturing, self._name, None) is None:
            self._fallback.flush()

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._fallback, attribute)


def _install_routers() -> None:
    """Put routers on sys.stdout/sys.stderr (again, if something replaced them)."""
    with _install_lock:
        if not isinstance(sys.stdout, _StreamRouter):
            sys.stdout = cast(TextIO, _StreamRouter("stdout", sys.stdout))
        if not isinstance(sys.stderr, _StreamRouter):
            sys.stderr = cast(TextIO, _StreamRouter("stderr", sys.stderr))


@contextmanager
def captured_stdio() -> Iterator[tuple[_Capture, _Capture]]:
    """Capture this thread's writes to sys.stdout and sys.stderr."""
    _install_routers()
    stdout, stderr = _Capture(), _Capture()
    previous = (getattr(_capturing, "stdout", None), getattr(_capturing, "stderr", None))
    _capturing.stdout, _capturing.stderr = stdout, stderr
    try:
        yield stdout, stderr
    finally:
        _capturing.stdout, _capturing.stderr = previous
