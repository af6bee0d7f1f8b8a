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

import uvicorn

from noetl.config import Settings
from noetl.embedded.services import EmbeddedNats, EmbeddedPostgres, free_port
from noetl.server.app import create_app
from noetl.worker.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    server: uvicorn.Server
    workers: list[Worker]

    @property
    def url(self) -> str:
        return self.settings.server_url


@contextlib.asynccontextmanager
async def embedded_services(settings: Settings) -> AsyncIterator[Settings]:
    """Start what of PostgreSQL and NATS the settings lack; yield settings that point at both."""
    started: list[EmbeddedPostgres | EmbeddedNats] = []
    try:
        if not settings.database_url:
            pg = await asyncio.to_thread(EmbeddedPostgres.start, settings.home / "pg")
            started.append(pg)
            settings = settings.with_(database_url=pg.url)
        if not settings.nats_url:
            nats = await asyncio.to_thread(EmbeddedNats.start, settings.home / "nats")
            started.append(nats)
            settings = settings.with_(nats_url=nats.url)
        yield settings
    finally:
        for service in reversed(started):
            await asyncio.to_thread(service.stop)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, workers: int = 1, port: int | None = None
) -> AsyncIterator[Runtime]:
    """Serve the API on `port` (default: a free one) and run `workers` workers in-process."""
    port = port or free_port()
    settings = settings.with_(server_port=port, server_url=f"http://127.0.0.1:{port}")
    config = uvicorn.Config(
        create_app(settings),
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
    if pool:  # wait (briefly) until the workers are subscribed, so work starts at once
        await asyncio.wait([asyncio.create_task(w.ready.wait()) for w in pool], timeout=10)
    try:
        yield Runtime(settings, server, pool)
    finally:
        for worker in pool:
            worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        server.should_exit = True
        await serving
