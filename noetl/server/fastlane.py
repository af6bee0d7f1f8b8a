"""The fast lane: the per-step requests without FastAPI's routing and dependencies.

Every step of every execution costs one `POST /api/events/batch` (the outcome, and under
continuation the next command in the answer) and, for a command that came through NATS, one
`POST /api/commands/claim`; a client waiting for a result polls `GET /api/executions/{id}`.
Through FastAPI each of those walks its exception and exit-stack middleware, matches the path
against every route and solves the endpoint's dependencies: about a fifth of the server's
time per step of a sequential chain (benchmarks/README.md §8).

This pure ASGI middleware sits inside the access control and the body limit (they apply
unchanged) and answers those routes itself: the same request model (`schemas`), the same
handler as the route (`routes.record_events`, `routes.claim_batch`,
`routes.execution_detail`), the same codec. A body it cannot parse or validate is handed, as
it came, to the application, whose answer (422, 400, ...) is then exactly the route's; so is
every other request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import psycopg.errors
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noetl import jsonfast
from noetl.errors import NoetlError, RequestError
from noetl.server import routes
from noetl.server.problems import body_of, status_of
from noetl.server.schemas import ClaimManyRequest, EventBatchRequest
from noetl.server.service import Orchestrator

Handler = Callable[[Orchestrator, Any], Awaitable[dict[str, Any]]]

LANES: dict[str, tuple[type[BaseModel], Handler]] = {
    "/api/events/batch": (EventBatchRequest, routes.record_events),
    "/api/commands/claim": (ClaimManyRequest, routes.claim_batch),
}
_JSON_HEADERS = [(b"content-type", b"application/json")]
EXECUTION = "/api/executions/"  # GET /api/executions/{id}: the id is digits, nothing follows


class FastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # what the request-time metric (app.BodyLimit) labels the request with
        self.routes = {path: SimpleNamespace(path=path) for path in LANES}
        self.execution_route = SimpleNamespace(path=EXECUTION + "{execution_id}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["method"] == "GET" and path.startswith(EXECUTION):
            execution_id = path[len(EXECUTION) :]
            if execution_id.isdigit() and execution_id.isascii():
                scope["route"] = self.execution_route
                await _answer(send, routes.execution_detail(_orchestrator(scope), execution_id))
                return
        lane = LANES.get(path)
        if lane is None or scope["method"] != "POST" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        if body is None:  # the client went away before its body arrived
            return
        model, handler = lane
        try:
            request = model.model_validate(jsonfast.loads(body))
        except Exception:  # invalid JSON or fields: the route answers it, as always
            await self.app(scope, replay(body, receive), send)
            return
        scope["route"] = self.routes[path]
        await _answer(send, handler(_orchestrator(scope), request))


def _orchestrator(scope: Scope) -> Orchestrator:
    orchestrator: Orchestrator = scope["app"].state.orchestrator
    return orchestrator


async def _answer(send: Send, handling: Awaitable[dict[str, Any]]) -> None:
    """The handler's answer, or its error as the application's handlers would answer it."""
    try:
        status, answer = 200, await handling
    except NoetlError as exc:
        status, answer = status_of(exc), body_of(exc)
    except psycopg.errors.DataError as exc:  # as app.unstorable answers it
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        error = RequestError(f"a value cannot be stored: {message}")
        status, answer = status_of(error), body_of(error)
    data = jsonfast.dumps(answer)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON_HEADERS, (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _is_json(scope: Scope) -> bool:
    """A JSON content type as FastAPI takes it (application/json or application/*+json);
    the others go to the route, which says what is wrong."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media: bytes = value.partition(b";")[0].strip().lower()
            kind, _, subtype = media.partition(b"/")
            return kind == b"application" and (subtype == b"json" or subtype.endswith(b"+json"))
    return False


async def _read(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """The body once more, as one message; then whatever the client sends next (the
    disconnect, when the application waits for it)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
