"""A whole NoETL in one process: server and worker on real PostgreSQL and NATS.

Used by `noetl run` and by the tests. Services come from the settings when
`NOETL_DATABASE_URL` / `NATS_URL` are set, otherwise embedded ones are started under
`NOETL_HOME`. Same code path as production: the server is a real HTTP server on a free port
and the worker talks to it over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noetl.config import Settings
from noetl.embedded.server_process import ServerProcess
from noetl.embedded.services import EmbeddedNats, EmbeddedPostgres, free_port
from noetl.errors import ConfigError

if TYPE_CHECKING:
    import httpx
    import uvicorn

    from noetl.worker.worker import Worker

log = logging.getLogger(__name__)


def preload(*, server: bool = True, worker: bool = True) -> None:
    """Import the server and the worker (most of `noetl run`'s start-up): call it in a thread
    while the embedded services start, so the two overlap (`noetl run` imports the server in
    a process of its own: `server=False` here, `worker=False` there). The worker's side
    includes the run's client of the API (`Runtime.client`): httpx loads its transport when a
    client is made and anyio's backend at its first request, ~0.09 s after the server started
    when left to them.

    The imports are CPU-bound Python and run one at a time (the GIL). The cyclic garbage
    collector is paused while they run (the ~170,000 objects they make are module contents,
    not garbage, and the collections that scanned them again and again were ~10 % of the
    imports' CPU) and then frozen out of later collections."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        if server:
            import uvicorn  # noqa: F401

            import noetl.server.app
        if worker:
            import anyio._backends._asyncio  # noqa: F401
            import httpcore  # noqa: F401

            import noetl.worker.worker  # noqa: F401
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


@dataclass
class Runtime:
    settings: Settings
    server: Any  # a uvicorn.Server in this process, or the ServerProcess serving (`noetl run`)
    workers: list[Worker]
    grace: float | None = None  # on exit, seconds to let running commands finish (None: all)

    @property
    def url(self) -> str:
        return self.settings.server_url

    def client(self, **options: Any) -> httpx.AsyncClient:
        """An HTTP client of this runtime's server. Plain HTTP on the loopback: its TLS context
        loads no CA certificates (httpx's default loads them, 0.05-0.1 s of CPU per client),
        so were it ever used for HTTPS it would fail to verify, never trust blindly."""
        import httpx

        return httpx.AsyncClient(base_url=self.url, verify=_NO_CA, **options)


_NO_CA = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificates, trusts none


@contextlib.asynccontextmanager
async def embedded_services(
    settings: Settings, *, meanwhile: Callable[[], object] | None = None
) -> AsyncIterator[Settings]:
    """Start what of PostgreSQL and NATS the settings lack (both at once); yield settings that
    point at both. Stops what it started, both at once. `meanwhile` runs in a thread once both
    are set going (e.g. `preload`): the processes start while this one imports. One process
    at a time embeds the services of a NOETL_HOME (a ConfigError names the other one)."""
    with _owning(settings.home) if settings.embeds else contextlib.nullcontext():
        async with _embedded(settings, meanwhile) as live:
            yield live


@contextlib.contextmanager
def _owning(home: Path) -> Iterator[None]:
    """One process at a time embeds the services of a NOETL_HOME: a second one took the first
    one's nats-server for a crash's leftover and stopped it. The lock (`NOETL_HOME/owner.lock`,
    released when the process ends, however it ends) names its holder for the refusal. (A
    `noetl run` beside a `noetl ui` of its home does not get here: it runs through that
    server, `served_at`.)"""
    import fcntl
    import os
    import sys

    home.mkdir(parents=True, exist_ok=True)
    with (home / "owner.lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(
                "NOETL_HOME",
                f"{home} is in use by {holder}; wait for it or stop it, or set NOETL_HOME"
                " to another folder",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} (noetl {' '.join(sys.argv[1:2])})")
        handle.flush()
        yield


SERVING = "serving.json"  # in NOETL_HOME while a `noetl ui` serves it: its pid and URL


@contextlib.contextmanager
def advertised(settings: Settings, url: str) -> Iterator[None]:
    """While this process embeds NOETL_HOME's services and serves its API (`noetl ui`, `noetl
    run --ui`), its address, so that a `noetl run` of the same home runs through it
    (`served_at`) instead of being refused. Nothing when the services are configured."""
    import json
    import os

    if not settings.embeds:
        yield
        return
    path = settings.home / SERVING
    mine = json.dumps({"pid": os.getpid(), "url": url})
    path.write_text(mine)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text() == mine:
                path.unlink()


def served_at(home: Path) -> str | None:
    """The URL of a live process that serves NOETL_HOME (`advertised`), or None. A file a
    killed process left names a process that no longer runs, or one that does not answer."""
    import json
    import os

    try:
        found = json.loads((home / SERVING).read_text())
        pid, url = int(found["pid"]), str(found["url"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # (no file: every run but one beside a `noetl ui`, which imports nothing)
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=2)
    try:
        connection.request("GET", f"{parts.path.rstrip('/')}/health")
        return url if connection.getresponse().status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


@contextlib.asynccontextmanager
async def _embedded(
    settings: Settings, meanwhile: Callable[[], object] | None
) -> AsyncIterator[Settings]:
    pg_task = nats_task = None
    if not settings.database_url:
        pg_task = asyncio.create_task(
            asyncio.to_thread(EmbeddedPostgres.start, settings.home / "pg")
        )
    if not settings.nats_url:
        nats_task = asyncio.create_task(
            asyncio.to_thread(EmbeddedNats.start, settings.home / "nats")
        )
    tasks = [task for task in (pg_task, nats_task) if task is not None]
    try:
        await asyncio.gather(
            *tasks, *([asyncio.to_thread(meanwhile)] if meanwhile is not None else [])
        )
        if pg_task is not None:
            settings = settings.with_(database_url=pg_task.result().url)
        if nats_task is not None:
            settings = settings.with_(nats_url=nats_task.result().url)
        yield settings
    finally:
        await asyncio.wait(tasks)  # a failed start: the other one may still be starting
        started = [t.result() for t in tasks if not t.cancelled() and t.exception() is None]
        await asyncio.gather(*(asyncio.to_thread(service.stop) for service in started))


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    *,
    workers: int = 1,
    port: int | None = None,
    ui: bool = True,
    warm: bool = False,
    process: ServerProcess | None = None,
) -> AsyncIterator[Runtime]:
    """Serve the API on `port` (default: a free one) and run `workers` workers in-process;
    `warm`: start each worker's first isolated python process at once (`noetl run`);
    `process`: serve the API from that process instead (`noetl run`)."""
    from noetl.worker.worker import Worker

    port = port or free_port()
    settings = settings.with_(server_port=port, server_url=f"http://127.0.0.1:{port}")
    if process is not None:
        process.serve(settings, ui=ui)
    pool = [
        Worker(settings.with_(worker_id=f"{settings.worker_id}-{index}"))
        for index in range(workers)
    ]
    warming = [asyncio.create_task(_warm_up(worker)) for worker in pool] if warm else []
    try:
        server = await _started(settings, ui, process)
    except BaseException:
        for task in warming:
            task.cancel()
        raise
    tasks = [asyncio.create_task(worker.run()) for worker in pool]
    if pool:  # wait until the workers are subscribed, so work starts at once
        await asyncio.wait([asyncio.create_task(w.ready.wait()) for w in pool], timeout=120)
    runtime = Runtime(settings, server, pool)
    try:
        yield runtime
    finally:
        for task in warming:
            task.cancel()
        await asyncio.gather(*warming, return_exceptions=True)
        await _stopped(pool, tasks, runtime.grace)
        if isinstance(server, ServerProcess):
            await server.stop()
        else:
            server.exit()
            await server.serving


async def _started(settings: Settings, ui: bool, process: ServerProcess | None) -> Any:
    """The API served here (a uvicorn server), or by `process` (killed if it fails to
    start)."""
    if process is None:
        return await serving(settings, ui=ui)
    try:
        await process.started()
    except BaseException:
        process.kill()
        raise
    return process


async def _stopped(
    pool: list[Worker], tasks: list[asyncio.Task[None]], grace: float | None
) -> None:
    """Stop the workers; past the grace their running commands are cancelled."""
    for worker in pool:
        worker.stop()
    if not tasks:
        return
    _, late = await asyncio.wait(tasks, timeout=grace)
    for task in late:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for worker, task in zip(pool, tasks, strict=True):
        if task in late:  # its own shutdown was cut short: release its connections
            with contextlib.suppress(Exception):
                await worker.subscriber.close()
            with contextlib.suppress(Exception):
                await worker.client.close()


async def serving(settings: Settings, *, ui: bool) -> Any:
    """The API in this process on `settings.server_port`: a uvicorn server, started (its
    `serving` is the task that serves until its `exit()`)."""
    import uvicorn

    from noetl.server.app import create_app

    config = uvicorn.Config(
        create_app(settings, ui=ui),
        host="127.0.0.1",
        port=settings.server_port,
        log_level="warning",
        lifespan="on",
        access_log=False,
        ws="none",  # the API has no WebSocket route; uvicorn's default imported websockets
    )
    server = _quick_exit_server(config)
    server.serving = asyncio.create_task(server.serve())
    while not server.started:
        if server.serving.done():
            with contextlib.suppress(BaseException):
                server.serving.result()
            raise RuntimeError("the NoETL server failed to start (its error is logged above)")
        await asyncio.sleep(0.005)
    return server


async def _warm_up(worker: Worker) -> None:
    """Start the worker's first isolated python process now, while the server starts: the
    first python step would otherwise wait for a new interpreter (0.05-0.1 s)."""
    from noetl.tools.python import PythonTool
    from noetl.tools.python_pool import START_SECONDS

    tool = worker.tools.get("python")
    if isinstance(tool, PythonTool):
        with contextlib.suppress(Exception):  # a real step will report what is wrong
            await tool.pool.run(
                "pass", {}, step="warm-up", libs={}, context={}, limit_seconds=START_SECONDS
            )


def _quick_exit_server(config: uvicorn.Config) -> Any:
    """A uvicorn server that stops as soon as asked: uvicorn notices `should_exit` at its next
    0.1 s tick and then pauses 0.1 s (and polls every 0.1 s) before closing connections, which
    `noetl run` paid at every exit. The same steps, without the fixed waits."""
    import uvicorn

    class QuickExitServer(uvicorn.Server):
        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            self.exiting = asyncio.Event()
            self.serving: asyncio.Task[None] | None = None

        def exit(self) -> None:
            self.should_exit = True
            self.exiting.set()

        async def main_loop(self) -> None:
            counter = 0
            while not await self.on_tick(counter):  # a signal sets should_exit: still seen
                counter = (counter + 1) % 864000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.exiting.wait(), 0.1)

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            for listening in self.servers:
                listening.close()
            for sock in sockets or []:
                sock.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()  # an idle keep-alive connection closes at once
            try:
                await asyncio.wait_for(
                    self._until_idle(), timeout=self.config.timeout_graceful_shutdown
                )
            except TimeoutError:
                for task in self.server_state.tasks:
                    task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
            if not self.force_exit:
                await self.lifespan.shutdown()

        async def _until_idle(self) -> None:
            state = self.server_state
            while (state.connections or state.tasks) and not self.force_exit:  # noqa: ASYNC110
                await asyncio.sleep(0.005)  # uvicorn's state has no event to wait for
            for listening in self.servers:
                await listening.wait_closed()

    return QuickExitServer(config)
