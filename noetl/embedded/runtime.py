"""A whole NoETL in one process: server and worker on real PostgreSQL and NATS.

Used by `noetl run` and by the tests. Services come from the settings when
`NOETL_DATABASE_URL` / `NATS_URL` are set, otherwise embedded ones are started under
`NOETL_HOME`. Same code path as production: the server is a real HTTP server on a free port
and the worker talks to it over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from noetl.config import Settings
from noetl.embedded.services import EmbeddedNats, EmbeddedPostgres, free_port

if TYPE_CHECKING:
    import uvicorn

    from noetl.worker.worker import Worker

log = logging.getLogger(__name__)


def preload() -> None:
    """Import the server and the worker (most of `noetl run`'s start-up): call it in a thread
    while the embedded services start, so the two overlap."""
    import uvicorn  # noqa: F401

    import noetl.server.app
    import noetl.worker.worker  # noqa: F401


@dataclass
class Runtime:
    settings: Settings
    server: uvicorn.Server
    workers: list[Worker]
    grace: float | None = None  # on exit, seconds to let running commands finish (None: all)

    @property
    def url(self) -> str:
        return self.settings.server_url


@contextlib.asynccontextmanager
async def embedded_services(settings: Settings) -> AsyncIterator[Settings]:
    """Start what of PostgreSQL and NATS the settings lack (both at once); yield settings that
    point at both. Stops what it started, both at once."""
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
        await asyncio.gather(*tasks)
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
    settings: Settings, *, workers: int = 1, port: int | None = None, ui: bool = True
) -> AsyncIterator[Runtime]:
    """Serve the API on `port` (default: a free one) and run `workers` workers in-process."""
    import uvicorn

    from noetl.server.app import create_app
    from noetl.worker.worker import Worker

    port = port or free_port()
    settings = settings.with_(server_port=port, server_url=f"http://127.0.0.1:{port}")
    config = uvicorn.Config(
        create_app(settings, ui=ui),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        access_log=False,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            with contextlib.suppress(BaseException):
                serving.result()
            raise RuntimeError("the NoETL server failed to start (its error is logged above)")
        await asyncio.sleep(0.02)
    pool = [
        Worker(settings.with_(worker_id=f"{settings.worker_id}-{index}"))
        for index in range(workers)
    ]
    tasks = [asyncio.create_task(worker.run()) for worker in pool]
    if pool:  # wait until the workers are subscribed, so work starts at once
        await asyncio.wait([asyncio.create_task(w.ready.wait()) for w in pool], timeout=120)
    runtime = Runtime(settings, server, pool)
    try:
        yield runtime
    finally:
        for worker in pool:
            worker.stop()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=runtime.grace)
            for task in late:  # past the grace: their running commands are cancelled
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for worker, task in zip(pool, tasks, strict=True):
                if task in late:  # its own shutdown was cut short: release its connections
                    with contextlib.suppress(Exception):
                        await worker.subscriber.close()
                    with contextlib.suppress(Exception):
                        await worker.client.close()
        server.should_exit = True
        await serving
