"""Evaluate a python step's code with its inputs: the one implementation both modes run.

In-process (``isolated: false``) the tool calls :func:`run_code` on a thread; isolated, a
child process runs :func:`serve`, which calls the same :func:`run_code` per request.

This module imports the standard library only: the child loads it by file path (see
``noetl.tools.python_pool``), without the ``noetl`` package and the tools it imports.

Wire format between the worker and a child (both directions): frames of a 16-byte header
(payload length, request id; two unsigned 64-bit big-endian integers) and a payload. The
first request is the child's setup; every later one is a pickled ``{code, inputs, step, libs,
context}``. Replies are JSON (a child never makes the worker unpickle anything): first
``{"pid"}``, then for each request the reply of :func:`run_code`.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import itertools
import json
import keyword
import linecache
import math
import os
import pickle
import struct
import sys
import threading
import traceback
import types
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TextIO, cast

STEP_MODULE = "noetl_step"
"""``__name__`` seen by user code (not ``__main__``, so a main guard does not call main twice)."""

HEADER = struct.Struct("!QQ")
"""Frame header: payload length, request id."""

Reply = dict[str, Any]
"""``{"ok": True, "value", "stdout", "stderr"}`` or
``{"ok": False, "message", "retryable", "details": {..., "stdout", "stderr"}}``."""

_ENTRY = "__noetl_step__"
_call_ids = itertools.count(1)
_MAX_CAPTURED_CHARS = 1_000_000
_NEW_SCOPE = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_CHUNK = 1 << 20
_SMALL = 1 << 16


class ResultError(ValueError):
    """The code ran, but its result cannot be made JSON-ready."""


def run_code(
    code: str,
    inputs: Mapping[str, Any],
    *,
    step: str = "python",
    libs: Mapping[str, str] | None = None,
    context: Mapping[str, Any] | None = None,
    cache: CodeCache | None = None,
) -> Reply:
    """Run code synchronously with captured stdio; never raises for what the code does.
    `cache`: where a child keeps compiled code between requests (see `CodeCache`)."""
    filename = f"<python step {step} #{next(_call_ids)}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    failure: Reply | None = None
    value: Any = None
    try:
        with captured_stdio() as (stdout, stderr):
            try:
                program, names = (cache or _NO_CACHE).compiled(code, inputs, filename)
                value = to_json(_evaluate(program, names, inputs, libs or {}, context or {}))
            except BaseException as exc:  # user code may raise anything
                failure = _failure(exc, filename)
    finally:
        linecache.cache.pop(filename, None)
    if failure is not None:
        failure["details"].update(stdout=stdout.text(), stderr=stderr.text())
        return failure
    return {"ok": True, "value": value, "stdout": stdout.text(), "stderr": stderr.text()}


def to_json(value: Any) -> Any:
    """Make a result JSON-serialisable.

    Tuples and sets become lists (sets sorted by their JSON text), mapping
    keys become strings, and anything else JSON cannot hold (datetime,
    Decimal, NaN, objects) becomes ``str(value)``. A circular value is a ResultError.
    """
    return _json_ready(value, set())


def _json_ready(value: Any, active: set[int]) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:  # as they are
        return value
    if kind is float and math.isfinite(value):
        return value
    if kind is dict:
        return _json_container(value, active)
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
        raise ResultError("python step result is not JSON-serialisable: circular reference")
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


class CodeCache:
    """Compiled step code by source and input names, for a child that runs the same code again
    (the steps of a chain, the items of a loop): parsing and compiling is most of a small
    step's time in a child (~85 of ~135 us). Each call still gets its own file name (its
    tracebacks and linecache entry): the cached code object is copied with it. Code whose
    compilation warns (a SyntaxWarning) is not kept, so each run prints the warning as
    before. Not thread-safe (warnings.catch_warnings): a child serves one request at a time;
    in-process calls do not use one."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: dict[
            tuple[str, tuple[str, ...]], tuple[types.CodeType, list[str] | None, bool]
        ] = {}  # (code, its parameters' names, whether it defines no function or class)

    def compiled(
        self, code: str, inputs: Mapping[str, Any], filename: str
    ) -> tuple[types.CodeType, list[str] | None]:
        key = (code, tuple(inputs))
        found = self._entries.get(key)
        if found is None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                program, names = _compile(code, inputs, _CACHED)
            if caught:  # compiled again where the warnings show, as without a cache
                return _compile(code, inputs, filename)
            if len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
            found = self._entries[key] = (program, names, _flat(program))
        program, names, flat = found
        if flat:
            return program.replace(co_filename=filename), names
        return _renamed(program, filename), names


class _NoCache(CodeCache):
    def compiled(
        self, code: str, inputs: Mapping[str, Any], filename: str
    ) -> tuple[types.CodeType, list[str] | None]:
        return _compile(code, inputs, filename)


_NO_CACHE = _NoCache(0)
_CACHED = "<cached python step>"


def _flat(program: types.CodeType) -> bool:
    """No function or class is defined in the code (its constants hold no code)."""
    return not any(isinstance(const, types.CodeType) for const in program.co_consts)


def _renamed(program: types.CodeType, filename: str) -> types.CodeType:
    """The code object, and those of the functions and classes it defines, under filename."""
    consts = tuple(
        _renamed(const, filename) if isinstance(const, types.CodeType) else const
        for const in program.co_consts
    )
    return program.replace(co_filename=filename, co_consts=consts)


def _compile(
    code: str, inputs: Mapping[str, Any], filename: str
) -> tuple[types.CodeType, list[str] | None]:
    """The code compiled, and None; or, when it has a top-level return, the code wrapped in a
    function (see `_as_function`) and the names of its keyword parameters."""
    tree = ast.parse(code, filename=filename)
    top_level = list(_top_level_nodes(tree))
    if any(isinstance(node, ast.Return) for node in top_level):
        declared_global = {
            name for node in top_level if isinstance(node, ast.Global) for name in node.names
        }
        return _as_function(tree, filename, inputs, declared_global)
    return compile(tree, filename, "exec"), None


def _evaluate(
    program: types.CodeType,
    names: list[str] | None,
    inputs: Mapping[str, Any],
    libs: Mapping[str, str],
    context: Mapping[str, Any],
) -> Any:
    namespace: dict[str, Any] = {
        "__name__": STEP_MODULE,
        "input_data": dict(inputs),
        "args": dict(inputs),  # upstream's name for the inputs
        "context": dict(context),  # execution_id, step, input: what the step runs in
    }
    namespace.update(_import_libs(libs))
    namespace.update(inputs)
    exec(program, namespace)
    if names is not None:
        entry = namespace.pop(_ENTRY)
        return entry(**{name: namespace[name] for name in names})
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


def _as_function(
    tree: ast.Module, filename: str, inputs: Mapping[str, Any], declared_global: set[str]
) -> tuple[types.CodeType, list[str]]:
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
    return compile(module, filename, "exec"), names


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
        import asyncio  # only here: it is the slowest import of a child's start

        return asyncio.run(value)
    return value


def _import_libs(libs: Mapping[str, str]) -> dict[str, Any]:
    """alias -> module, or ``module:attribute`` for ``from module import attribute``."""
    found: dict[str, Any] = {}
    for alias, spec in libs.items():
        module, _, attribute = spec.partition(":")
        imported = importlib.import_module(module)
        found[alias] = getattr(imported, attribute) if attribute else imported
    return found


def _failure(exc: BaseException, filename: str) -> Reply:
    """A failed reply whose message is the traceback's last line."""
    if isinstance(exc, ResultError):
        return _failed(str(exc), {})
    tool_error = getattr(sys.modules.get("noetl.tools.base"), "ToolError", None)
    if tool_error is not None and isinstance(exc, tool_error):  # raised on purpose: kept as is
        return _failed(exc.message, to_json(exc.details), retryable=bool(exc.retryable))
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
    return _failed(message, details)


def _failed(message: str, details: dict[str, Any], *, retryable: bool = False) -> Reply:
    return {"ok": False, "message": message, "retryable": retryable, "details": details}


# -- stdout and stderr ----------------------------------------------------------------------


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
    if isinstance(sys.stdout, _StreamRouter) and isinstance(sys.stderr, _StreamRouter):
        return  # (the usual case: no lock)
    with _install_lock:
        if not isinstance(sys.stdout, _StreamRouter):
            sys.stdout = cast(TextIO, _StreamRouter("stdout", sys.stdout))
        if not isinstance(sys.stderr, _StreamRouter):
            sys.stderr = cast(TextIO, _StreamRouter("stderr", sys.stderr))


def captured_stdio() -> _CapturedStdio:
    """Capture this thread's writes to sys.stdout and sys.stderr."""
    return _CapturedStdio()


class _CapturedStdio:
    """`captured_stdio()`'s context manager (a class, not a generator: a child opens one per
    step)."""

    def __enter__(self) -> tuple[_Capture, _Capture]:
        _install_routers()
        self.streams = stdout, stderr = _Capture(), _Capture()
        self.previous = (
            getattr(_capturing, "stdout", None),
            getattr(_capturing, "stderr", None),
        )
        _capturing.stdout, _capturing.stderr = stdout, stderr
        return self.streams

    def __exit__(self, *exc: object) -> None:
        _capturing.stdout, _capturing.stderr = self.previous


# -- the child process ----------------------------------------------------------------------


def serve(argv: list[str]) -> None:
    """A child's main loop: ``argv`` is request fd, reply fd, the worker's pid.

    Runs requests one at a time until the worker closes the request pipe.
    """
    request_fd, reply_fd, parent = (int(arg) for arg in argv)
    for fd in (request_fd, reply_fd):  # a subprocess of the code must not hold the pipes
        os.set_inheritable(fd, False)
    _die_with_parent(parent)
    requests = _Requests(request_fd)
    setup = requests.frame()
    if setup is None:
        return
    options = pickle.loads(setup[1])  # noqa: S301 - from the worker that started us
    sys.path[:] = options["sys_path"]
    sys.argv = [""]
    if options.get("memory_bytes"):
        _limit_memory(options["memory_bytes"])
    me, cwd, environ, cache = os.getpid(), os.getcwd(), _Environ(), CodeCache()
    try:
        _write_frame(reply_fd, 0, json.dumps({"pid": me}).encode())
        while (frame := requests.frame()) is not None:
            request_id, payload = frame
            reply = _handle(payload, cache)
            if os.getpid() != me:  # the code forked and this is the copy: it must not reply
                os._exit(0)
            _write_frame(reply_fd, request_id, _encode(reply))
            del reply, payload, frame
            _restore(cwd, environ)
    except BrokenPipeError:  # the worker closed its end (it stops, or gave up on this child):
        return  # nobody is left to tell, and a traceback would land in the worker's stderr


class _Environ:
    """The environment as the child started, and a cheap test whether a step changed it:
    `os.environ == dict` goes through the generic Mapping comparison (a decode and lookup
    per variable, ~0.1 ms after every step); the encoded dict behind os.environ compares in
    C."""

    def __init__(self) -> None:
        self.text = dict(os.environ)
        self.encoded = _encoded()

    def changed(self) -> bool:
        data = getattr(os.environ, "_data", None)  # compared as it is: no copy per step
        return (data if isinstance(data, dict) else _encoded()) != self.encoded


def _encoded() -> dict[Any, Any]:
    data = getattr(os.environ, "_data", None)  # CPython's os._Environ keeps it
    return dict(data) if isinstance(data, dict) else dict(os.environ)


def _restore(cwd: str, environ: _Environ) -> None:
    """Undo a step's chdir and environment changes, so the next step on this child does not
    depend on which steps ran here before."""
    with contextlib.suppress(OSError):
        if os.getcwd() != cwd:
            os.chdir(cwd)
    if environ.changed():
        os.environ.clear()
        os.environ.update(environ.text)


def _handle(payload: bytes, cache: CodeCache) -> Reply:
    try:
        request = pickle.loads(payload)  # noqa: S301 - from the worker that started us
    except BaseException as exc:  # e.g. an input's class cannot be imported here
        message = f"python step input cannot be loaded in the isolated process: {exc!r}"
        return _failed(message, {"stdout": "", "stderr": ""})
    return run_code(
        request["code"],
        request["inputs"],
        step=request["step"],
        libs=request["libs"],
        context=request["context"],
        cache=cache,
    )


def _encode(reply: Reply) -> bytes:
    try:
        return _dumps(reply).encode()
    except MemoryError:
        failure = _failed("MemoryError: the step's result does not fit in the memory limit", {})
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. an int over the digit limit
        failure = _failed(f"python step result is not JSON-serialisable: {exc}", {})
    failure["details"].update(stdout=reply.get("stdout", ""), stderr=reply.get("stderr", ""))
    return json.dumps(failure).encode()


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODER = json.encoder.c_make_encoder  # type: ignore[attr-defined]


def _dumps(reply: Reply) -> str:
    """json.dumps of a reply by one C encoder made once: json.dumps makes one per call, and
    that was most of a small reply's encoding (~27 k instructions, now ~16 k). No check for
    circular values: `to_json` made the reply's values, and refuses them."""
    if _REPLY_ENCODER is None:  # a Python without the C encoder
        return json.dumps(reply)
    return "".join(_REPLY_ENCODER(reply, 0))


_REPLY_ENCODER = (
    None
    if _ENCODER is None
    else _ENCODER(
        None, _not_json, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True
    )
)


def _die_with_parent(parent: int) -> None:
    """On Linux the kernel kills this process when the worker dies, even mid-step."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


def _limit_memory(limit: int) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class _Requests:
    """The request pipe, read ahead: a frame's header and a small payload come in one read
    (the worker writes them in one), not two."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = b""

    def frame(self) -> tuple[int, bytes] | None:
        """The next frame's request id and payload, or None at end of file."""
        header = self._take(HEADER.size)
        if header is None:
            return None
        length, request_id = HEADER.unpack(header)
        payload = self._take(length)
        if payload is None:
            return None
        return request_id, payload

    def _take(self, size: int) -> bytes | None:
        """``size`` bytes, or None at end of file."""
        data = self.pending
        if len(data) < size:
            parts = [data]
            have = len(data)
            while have < size:
                chunk = os.read(self.fd, min(max(size - have, _SMALL), _CHUNK))
                if not chunk:
                    return None
                parts.append(chunk)
                have += len(chunk)
            data = b"".join(parts)
        self.pending = data[size:]
        return data[:size]


def _write_frame(fd: int, request_id: int, payload: bytes) -> None:
    header = HEADER.pack(len(payload), request_id)
    parts = [header + payload] if len(payload) < _SMALL else [header, payload]
    for part in parts:
        data = memoryview(part)
        while data:
            data = data[os.write(fd, data[:_CHUNK]) :]
