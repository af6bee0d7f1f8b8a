"""`noetl run`'s server in a process of its own, started before the run knows its settings.

Most of a short `noetl run` is imports: CPU-bound Python that runs one module at a time in a
process (the GIL), the server's (FastAPI, pydantic, psycopg, uvicorn) and the worker's. Here
the server's run in a second process, on another core, while the run's own process loads the
command line, reads the playbook, starts PostgreSQL and NATS and loads the worker. The `noetl`
command starts this process first of all (`start_early`): it imports what both processes use
(asyncio, pydantic, the DSL, nats-py: `SHARED`) and forks, so that the two import it once;
where forking is not safe (not Linux, or threads already running) it starts a new interpreter
instead (`start`, as a run started another way does). The server process imports the rest,
then waits for its orders: one line of JSON on its stdin, the settings to serve with. It
answers `started` on its stdout once it accepts requests (whatever else it prints goes to
stderr) and serves until its stdin ends: the run closes it to stop it, and it ends too when
the run's process ends, however that ends (a process still importing notices at its orders).
The run stops it and waits for it before it returns; one that never got its orders (the
playbook was invalid) is killed. It runs in a session of its own, as PostgreSQL and NATS do:
a terminal's Ctrl-C goes to the run alone, which still needs its server to cancel the
execution before it stops it.

The same application as `noetl server start`, on a real HTTP port. This module is the run's
side, and loads next to nothing: the `noetl` command imports it before anything else; the
process's side is `noetl.embedded.server_main`.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
from typing import IO, TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from noetl.config import Settings

STOP_SECONDS = 10.0  # for its shutdown (connections, the pool), then it is killed
# imported before the fork: what both processes use (~a third of the server's imports)
SHARED = (
    "asyncio",
    "uvloop",
    "pydantic",
    "noetl.dsl",
    "noetl.bus",
    "noetl.protocol.command",
    "noetl.protocol.outcome",
    "noetl.tools",
    "noetl.embedded.runtime",
)


class Child(Protocol):
    """What of a child process is used here: a `subprocess.Popen`, or a `Forked`."""

    stdin: IO[bytes] | None
    stdout: IO[bytes] | None

    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def kill(self) -> None: ...


_early: list[ServerProcess] = []  # started by `start_early`, until the run takes it


class ServerProcess:
    """The run's side: start, give the orders, wait until it serves, stop."""

    def __init__(self, process: Child) -> None:
        self.process = process
        atexit.register(self.kill)  # e.g. the playbook was invalid: it never got orders

    @classmethod
    def start(cls) -> ServerProcess:
        """In a new interpreter."""
        process = subprocess.Popen(
            [sys.executable, "-m", "noetl.embedded.server_main"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C goes to noetl, which cancels, then stops it
        )
        return cls(process)

    @classmethod
    def start_early(cls) -> None:
        """Start one now, forked once `SHARED` is imported where that is safe, for a run
        that `take` hands it to later."""
        if sys.platform != "linux" or threading.active_count() > 1:
            _early.append(cls.start())
            return
        import gc
        import importlib

        collecting = gc.isenabled()
        gc.disable()  # (see runtime.preload)
        try:
            for name in SHARED:
                importlib.import_module(name)
        finally:
            if collecting:
                gc.enable()
        _early.append(cls(Forked.start()))

    @classmethod
    def take(cls) -> ServerProcess:
        """The one started early, or a new one."""
        return _early.pop() if _early else cls.start()

    def serve(self, settings: Settings, *, ui: bool) -> None:
        """Send the orders; it starts serving once it has imported. Its logging is this
        process's: the level, and the levels set on NoETL's loggers (`noetl run` quiets
        some, e.g. the new-key warning it notes in a plain line of its own)."""
        import json
        import logging
        from dataclasses import fields

        values = {f.name: getattr(settings, f.name) for f in fields(settings)}
        levels = {
            name: logger.level
            for name, logger in logging.Logger.manager.loggerDict.items()
            if name.startswith("noetl") and isinstance(logger, logging.Logger) and logger.level
        }
        orders = {
            "settings": {**values, "home": str(settings.home)},
            "ui": ui,
            "log": logging.getLevelName(logging.getLogger().level),
            "levels": levels,
        }
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(orders).encode() + b"\n")
        self.process.stdin.flush()

    async def started(self) -> None:
        """Until it accepts requests; RuntimeError if it ended instead (its error is on
        stderr)."""
        import asyncio

        assert self.process.stdout is not None
        answer = await asyncio.to_thread(self.process.stdout.readline)
        if answer.strip() != b"started":
            await asyncio.to_thread(self.process.wait)
            raise RuntimeError("the NoETL server failed to start (its error is logged above)")

    async def stop(self) -> None:
        """End its stdin (it stops serving: connections closed, lifespan ended), and wait."""
        import asyncio

        atexit.unregister(self.kill)
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
        except OSError:  # it has ended already
            pass
        ended = asyncio.ensure_future(asyncio.to_thread(self.process.wait))
        try:
            await asyncio.wait_for(asyncio.shield(ended), STOP_SECONDS)
        except TimeoutError:
            self.kill()
            await ended

    def kill(self) -> None:
        atexit.unregister(self.kill)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class Forked:
    """A child forked from this process: it runs noetl.embedded.server_main as `python -m`
    would, with the pipes as its stdin and stdout."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdin: IO[bytes] | None = stdin
        self.stdout: IO[bytes] | None = stdout
        self.returncode: int | None = None

    @classmethod
    def start(cls) -> Forked:
        orders_read, orders_write = os.pipe()
        report_read, report_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            try:
                os.setsid()
                os.dup2(orders_read, 0)
                os.dup2(report_write, 1)
                for fd in (orders_read, orders_write, report_read, report_write):
                    os.close(fd)
                import runpy  # as `python -m` runs it

                runpy.run_module("noetl.embedded.server_main", run_name="__main__")
            finally:
                os._exit(1)
        os.close(orders_read)
        os.close(report_write)
        return cls(pid, os.fdopen(orders_write, "wb"), os.fdopen(report_read, "rb"))

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped meanwhile by `wait` in another thread
                return self.returncode if self.returncode is not None else -1
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:  # reaped meanwhile by `poll` in another thread
                return self.returncode if self.returncode is not None else -1
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
