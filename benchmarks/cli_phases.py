"""`noetl run PLAYBOOK --json` with a timestamp (wall and this process's CPU) at each phase
boundary, printed to stderr as `PHASE <wall s> cpu <cpu s> <what>`; the wall clock counts from
the epoch time in the T0 environment variable (set it just before starting the process).

Run by `python -m benchmarks.cli_run --phases` (as a file, so that `noetl` is the one the
caller chose); the functions are wrapped where they are
looked up, without importing anything `noetl run` would not import itself (the server and
worker modules are wrapped once the run's own preload has imported them)."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

T0 = float(os.environ.get("T0", time.time()))


def mark(what: str) -> None:
    sys.stderr.write(f"PHASE {time.time() - T0:7.3f} cpu {time.process_time():.3f} {what}\n")


mark("python up")

try:  # what the `noetl` command does first (since the server process)
    from noetl.embedded.server_process import ServerProcess
except ImportError:
    ServerProcess = None  # type: ignore[assignment,misc]
if ServerProcess is not None:
    ServerProcess.start_early()
    mark("server process started early")

import noetl.cli.main as cli  # noqa: E402
import noetl.embedded.runtime as runtime  # noqa: E402
import noetl.embedded.services as services  # noqa: E402

mark("CLI imported")


def wrap(owner: Any, name: str, label: str) -> None:
    original = owner.__dict__[name]
    is_classmethod = isinstance(original, classmethod)
    function = original.__func__ if is_classmethod else original

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        mark(f"{label} begin")
        try:
            return function(*args, **kwargs)
        finally:
            mark(f"{label} end")

    setattr(owner, name, classmethod(timed) if is_classmethod else timed)


def wrap_async(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        mark(f"{label} begin")
        try:
            return await original(*args, **kwargs)
        finally:
            mark(f"{label} end")

    setattr(owner, name, timed)


def after_preload() -> None:
    from noetl.worker.worker import Worker

    wrap_async(Worker, "run", "worker")
    if "uvicorn" in sys.modules:  # the server runs in this process (before the server process)
        wrap_async(sys.modules["uvicorn"].Server, "shutdown", "server shutdown")


wrap(cli, "_validate_or_exit", "validate")
wrap(services.EmbeddedPostgres, "start", "postgres start")
wrap(services.EmbeddedPostgres, "stop", "postgres stop")
wrap(services.EmbeddedNats, "start", "nats start")
wrap(services.EmbeddedNats, "stop", "nats stop")
original_preload = runtime.preload


def preload(**options: Any) -> None:
    mark("preload (imports) begin")
    original_preload(**options)
    after_preload()
    mark("preload (imports) end")


runtime.preload = preload
if ServerProcess is not None:
    wrap_async(ServerProcess, "started", "server process started")
    wrap_async(ServerProcess, "stop", "server process stop")
original_running = runtime.running


@contextlib.asynccontextmanager
async def running(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
    mark("server + worker start begin")
    async with original_running(*args, **kwargs) as started:
        mark("server + worker start end")
        if hasattr(started, "client"):  # an older checkout has none: no requests timed
            original_client: Callable[..., Any] = started.client

            def client(**options: Any) -> Any:
                made = original_client(**options)
                send = made.send

                async def timed_send(request: Any, *a: Any, **k: Any) -> Any:
                    path = request.url.path
                    label = "execute" if path == "/api/execute" else f"{request.method} {path}"
                    mark(f"{label} begin")
                    try:
                        return await send(request, *a, **k)
                    finally:
                        mark(f"{label} end")

                made.send = timed_send
                return made

            started.client = client  # type: ignore[method-assign]
        yield started
        mark("server + worker stop begin")
    mark("server + worker stop end")


runtime.running = running
sys.argv = ["noetl", "run", sys.argv[1], "--json"]
atexit.register(mark, "exit handlers")
cli.main()
