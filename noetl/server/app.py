"""The FastAPI application: thin routes over `Orchestrator`, errors mapped in one table."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Receive, Scope, Send

from noetl import jsonfast
from noetl.bus.nats_client import NATSCommandPublisher, Topology
from noetl.config import Settings
from noetl.errors import (
    NoetlError,
    PayloadTooLargeError,
    RequestError,
)
from noetl.ids import SnowflakeGenerator
from noetl.secrets import Cipher
from noetl.server import credential_routes, metrics, schedule_routes
from noetl.server.access import BearerAuth
from noetl.server.fastlane import FastLane, replay
from noetl.server.problems import body_of, status_of
from noetl.server.relay import Relay
from noetl.server.routes import router
from noetl.server.scheduler import Scheduler
from noetl.server.service import Orchestrator
from noetl.store.database import migrate, open_pool

log = logging.getLogger(__name__)

T = TypeVar("T")


class FastJSON(JSONResponse):
    """Every answer through the one codec: any value read from the database can be shown."""

    def render(self, content: Any) -> bytes:
        return jsonfast.dumps(content)


def _error_response(exc: NoetlError) -> JSONResponse:
    return JSONResponse(body_of(exc), status_code=status_of(exc))


class BodyLimit:
    """Pure ASGI middleware: refuse bodies over the limit (413, also when chunked) and time
    every request."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self, size: int | str) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"request body is {size} bytes; the limit is {self.limit} (NOETL_MAX_PAYLOAD_BYTES)"
        )

    async def _buffered(self, receive: Receive) -> Receive | None:
        """The whole body as one message, or None once it exceeds the limit."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return replay(b"".join(chunks), receive)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await _error_response(self._too_large(length.decode()))(scope, receive, send)
            return
        if not length.isdigit() and scope["method"] in {"POST", "PUT", "PATCH"}:
            # a chunked body: read it here, so going over the limit is a clean 413
            buffered = await self._buffered(receive)
            if buffered is None:
                await _error_response(self._too_large(f"over {self.limit}"))(scope, receive, send)
                return
            receive = buffered
        started = time.perf_counter()
        await self.app(scope, receive, send)
        route = scope.get("route")
        metrics.REQUEST_SECONDS.labels(
            scope["method"], getattr(route, "path", "unmatched")
        ).observe(time.perf_counter() - started)


async def _connected(settings: Settings) -> tuple[AsyncConnectionPool, NATSCommandPublisher]:
    """The database (waited for: a busy or restarting one) and NATS (in the background
    when it does not answer at once)."""
    pool = await open_pool(settings.require_database_url(), max_size=20)
    try:
        async with pool.connection() as conn:
            await migrate(conn)
        publisher = NATSCommandPublisher(
            settings.require_nats_url(), Topology.from_settings(settings)
        )
        try:
            await publisher.start()
        except Exception as exc:
            log.warning("NATS unavailable at start (%s); connecting in the background", exc)
            await publisher.start(wait=False)
    except BaseException:
        await pool.close()
        raise
    return pool, publisher


class StartupStopped(Exception):
    """SIGTERM or SIGINT came while the server was starting."""


async def _stoppable(work: Coroutine[Any, Any, T]) -> T:
    """`work`, stopped by SIGTERM or SIGINT (raising `StartupStopped`). uvicorn looks at
    those signals only once the application has started (Kludex/uvicorn#2751): a start that
    waits for PostgreSQL would let a stop request wait as long. The handlers installed
    before are still called, and are put back after."""
    task = asyncio.ensure_future(work)
    if threading.current_thread() is not threading.main_thread():  # no signals here
        return await task
    loop = asyncio.get_running_loop()
    stopped = False
    before: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        nonlocal stopped
        stopped = True
        loop.call_soon_threadsafe(task.cancel)
        if callable(before[signum]):
            before[signum](signum, frame)

    for signum in (signal.SIGTERM, signal.SIGINT):
        before[signum] = signal.getsignal(signum)
        signal.signal(signum, handler)
    try:
        return await task
    except asyncio.CancelledError:
        if not stopped or not task.cancelled():
            raise
        raise StartupStopped("stopped while starting") from None
    finally:
        for number, previous in before.items():
            signal.signal(number, previous)


def create_app(settings: Settings, *, ui: bool = True) -> FastAPI:
    """The server's application; `ui=False` leaves out the web UI (`noetl run` without
    `--ui`, where nobody browses it: its import is a fifth of the command's start-up)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool, publisher = await _stoppable(_connected(settings))
        orchestrator = Orchestrator(pool, publisher, settings, SnowflakeGenerator(settings.node_id))
        app.state.orchestrator = orchestrator
        app.state.cipher = Cipher.from_settings(settings.encryption_key, settings.home)
        if settings.api_token and not settings.worker_token:
            log.warning(
                "NOETL_API_TOKEN without NOETL_WORKER_TOKEN: the API token is also the workers'"
                " token and reads credential data; set NOETL_WORKER_TOKEN to separate them"
            )
        relay = asyncio.create_task(Relay(orchestrator).run())
        scheduler = asyncio.create_task(Scheduler(orchestrator).run())
        log.info("NoETL server ready (node %s)", settings.node_id)
        try:
            yield
        finally:
            for task in (relay, scheduler):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await publisher.close()
            await pool.close()

    app = FastAPI(
        title="NoETL",
        version="0.1.0",
        description="Event-sourced workflow engine: playbooks, executions, commands, events.",
        lifespan=lifespan,
        default_response_class=FastJSON,
    )
    app.state.settings = settings
    app.add_middleware(FastLane)  # innermost: access control and the body limit apply
    app.add_middleware(BodyLimit, limit=settings.max_payload_bytes)
    app.add_middleware(BearerAuth, api_token=settings.api_token, worker_token=settings.worker_token)
    app.include_router(router)
    app.include_router(credential_routes.router)
    app.include_router(schedule_routes.router)
    if ui:
        from noetl import ui as web_ui

        web_ui.install(app)

    @app.exception_handler(NoetlError)
    async def noetl_error(request: Request, exc: NoetlError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in err["loc"][1:]) or "body", "message": err["msg"]}
            for err in exc.errors()
        ]
        message = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return JSONResponse(
            {"error": "RequestError", "message": message, "problems": problems}, status_code=422
        )

    @app.exception_handler(psycopg.errors.DataError)
    async def unstorable(request: Request, exc: psycopg.errors.DataError) -> JSONResponse:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _error_response(RequestError(f"a value cannot be stored: {message}"))

    @app.exception_handler(json.JSONDecodeError)
    async def invalid_json(request: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return _error_response(RequestError(f"invalid JSON body: {exc}"))

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
