"""HTTP routes. Each one parses, calls the orchestrator or the store, and shapes the answer."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import ValidationError

from noetl import jsonfast
from noetl.errors import NoetlError, NotFoundError, RequestError
from noetl.protocol.command import ClaimReply, Refusal
from noetl.protocol.events import EventType
from noetl.protocol.outcome import Outcome, Report, Retry
from noetl.server import rerun as reruns
from noetl.server import steplogs, views
from noetl.server.problems import body_of, status_of
from noetl.server.schemas import (
    CancelRequest,
    ChildRequest,
    ClaimManyRequest,
    ClaimRequest,
    EventBatchRequest,
    EventRequest,
    ExecuteRequest,
    LeaseRequest,
    RegisterRequest,
    RerunRequest,
    RetryingRequest,
    WorkerHeartbeat,
)
from noetl.server.service import Orchestrator
from noetl.store import catalog, events, executions, workers

router = APIRouter()


def _orchestrator(request: Request) -> Orchestrator:
    orchestrator: Orchestrator = request.app.state.orchestrator
    return orchestrator


def _json(body: Any, status_code: int = 200) -> Response:
    """Encode with orjson and skip FastAPI's generic encoder: these routes are hot paths."""
    return Response(jsonfast.dumps(body), status_code, media_type="application/json")


def _parse_id(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise NotFoundError(f"{what} {value!r} does not exist (ids are integers)") from None


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    orchestrator = _orchestrator(request)
    async with orchestrator.pool.connection() as conn:
        await conn.execute("SELECT 1")
    return {"status": "ok", "nats": orchestrator.publisher.connected}


# -- catalog ------------------------------------------------------------------------------


@router.post("/api/catalog/register", status_code=201)
async def register(request: Request) -> dict[str, Any]:
    """Register a playbook: the YAML text as the body, or JSON `{"content": "..."}`."""
    raw = (await request.body()).decode("utf-8", errors="replace")
    content = raw
    if "json" in request.headers.get("content-type", ""):
        try:
            content = RegisterRequest.model_validate(json.loads(raw)).content
        except (json.JSONDecodeError, ValidationError) as exc:
            raise RequestError(f'expected JSON {{"content": "<yaml>"}}: {exc}') from None
    if not content.strip():
        raise RequestError("the request body is empty; send the playbook YAML")
    entry = await _orchestrator(request).register(content)
    return views.catalog_entry(entry)


@router.get("/api/catalog")
async def list_catalog(request: Request) -> dict[str, Any]:
    async with _orchestrator(request).pool.connection() as conn:
        rows = await catalog.list_entries(conn)
    return {"items": [views.catalog_entry(row) for row in rows]}


# -- executions ---------------------------------------------------------------------------


@router.post("/api/execute", status_code=201)
async def execute(request: Request, body: ExecuteRequest) -> dict[str, Any]:
    orchestrator = _orchestrator(request)
    given = [x for x in (body.path, body.catalog_id, body.playbook) if x is not None]
    if len(given) != 1:
        raise RequestError("give exactly one of `path`, `catalog_id` or `playbook`")
    entry = await orchestrator.resolve(
        path=body.path, catalog_id=body.catalog_id, content=body.playbook, version=body.version
    )
    execution_id = await orchestrator.execute(
        entry,
        body.payload,
        parent_execution_id=body.parent_execution_id,
        timeout_seconds=body.timeout_seconds,
    )
    return {
        "execution_id": str(execution_id),
        "path": entry["path"],
        "version": entry["version"],
        "catalog_id": str(entry["catalog_id"]),
        "status": "RUNNING",
    }


@router.get("/api/executions")
async def list_executions(
    request: Request,
    status: Annotated[
        Literal["RUNNING", "COMPLETED", "FAILED", "CANCELLED"] | None, Query()
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    path: Annotated[str | None, Query(max_length=500, description="substring of the path")] = None,
    before: Annotated[int | None, Query(description="older than this execution id")] = None,
    after: Annotated[int | None, Query(description="newer than this execution id")] = None,
    parent: Annotated[int | None, Query(description="children of this execution")] = None,
    brief: Annotated[bool, Query(description="leave out each execution's result")] = False,
    schedule: Annotated[int | None, Query(description="started by this schedule")] = None,
) -> dict[str, Any]:
    """Newest first; page with `before` (older) or `after` (newer) set to an execution id."""
    async with _orchestrator(request).pool.connection() as conn:
        rows = await executions.list_executions(
            conn,
            status=status,
            limit=limit,
            path=path,
            before=before,
            after=after,
            parent=parent,
            brief=brief,
            schedule=schedule,
        )
    return {"items": [views.execution_summary(row) for row in rows]}


@router.get("/api/executions/{execution_id}")
async def get_execution(request: Request, execution_id: str) -> dict[str, Any]:
    return await execution_detail(_orchestrator(request), execution_id)


async def execution_detail(orchestrator: Orchestrator, execution_id: str) -> dict[str, Any]:
    """The answer of `GET /api/executions/{id}` (also served by `fastlane`: clients poll it)."""
    eid = _parse_id(execution_id, "execution")
    held = orchestrator.flow.states.get(eid)
    async with orchestrator.pool.connection() as conn:
        row = await executions.get_detail(conn, eid, held.version if held else -1)
    if row is None:
        raise NotFoundError(f"execution {execution_id} does not exist")
    if row["state"] is None and held is not None and held.version == row["state_version"]:
        row["state"] = views.detail_state(held.state)  # what the row holds, not read again
    return views.execution_detail(row)


@router.get("/api/executions/{execution_id}/events")
async def get_events(
    request: Request,
    execution_id: str,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    eid = _parse_id(execution_id, "execution")
    async with _orchestrator(request).pool.connection() as conn:
        if after == 0 and await executions.get_execution(conn, eid) is None:
            raise NotFoundError(f"execution {execution_id} does not exist")
        rows = await events.list_events(conn, eid, after=after, limit=limit)
    return {"items": [views.event(row) for row in rows]}


@router.get("/api/executions/{execution_id}/logs")
async def get_logs(
    request: Request,
    execution_id: str,
    step: Annotated[str | None, Query(max_length=500)] = None,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """What the tools of each command printed: one item per command and stream (`stdout`,
    `stderr`), in order; `?after=<event_id>` to follow."""
    items = await steplogs.command_logs(
        _orchestrator(request).pool,
        _parse_id(execution_id, "execution"),
        step=step,
        after=after,
        limit=limit,
    )
    return {"items": items}


@router.post("/api/executions/{execution_id}/cancel")
async def cancel(
    request: Request, execution_id: str, body: Annotated[CancelRequest | None, Body()] = None
) -> dict[str, Any]:
    eid = _parse_id(execution_id, "execution")
    reason = body.reason if body else "cancelled by request"
    status = await _orchestrator(request).cancel(eid, reason)
    return {"execution_id": str(eid), "status": status}


@router.post("/api/executions/{execution_id}/rerun", status_code=201)
async def rerun(
    request: Request, execution_id: str, body: Annotated[RerunRequest | None, Body()] = None
) -> dict[str, Any]:
    """A new execution of an ended one, linked by `rerun_of`: completed steps upstream of the
    restart point are reused, the restart step and everything downstream run fresh."""
    eid = _parse_id(execution_id, "execution")
    body = body or RerunRequest()
    if body.from_step is not None and body.from_failed:
        raise RequestError("give `from_failed` or `from_step`, not both")
    if body.from_step is None and body.from_failed is False:
        raise RequestError("give `from_failed: true` or `from_step`")
    return await reruns.rerun(
        _orchestrator(request),
        eid,
        from_step=body.from_step,
        payload=body.payload,
        version=body.version,
    )


# -- the worker protocol ------------------------------------------------------------------


@router.get("/api/commands/{event_id}")
async def get_command(request: Request, event_id: str) -> Response:
    return _json(await _orchestrator(request).workers.get_command(_parse_id(event_id, "command")))


@router.post("/api/commands/claim")
async def claim_many(request: Request, body: ClaimManyRequest) -> Response:
    """Claim several commands in one round trip (a worker that fetched a batch).

    `claimed`: the commands now held, as `/claim` returns them; `refused`: by event id, the
    HTTP status and message each would have had alone (404 unknown, 409 held or ended)."""
    return _json(await claim_batch(_orchestrator(request), body))


async def claim_batch(orchestrator: Orchestrator, body: ClaimManyRequest) -> dict[str, Any]:
    """The answer of `POST /api/commands/claim` (also served by `fastlane`)."""
    answers = await orchestrator.workers.claim_many(body.event_ids, body.worker_id)
    reply = ClaimReply(
        claimed=tuple(a for a in answers.values() if not isinstance(a, Exception)),
        refused={
            event_id: Refusal(status_of(a), str(a))
            for event_id, a in answers.items()
            if isinstance(a, Exception)
        },
    )
    return reply.to_json()


@router.post("/api/commands/{event_id}/claim")
async def claim(request: Request, event_id: str, body: ClaimRequest) -> Response:
    """Claim + fetch in one round trip. 409: another live attempt holds it, or it ended."""
    command = await _orchestrator(request).workers.claim(
        _parse_id(event_id, "command"), body.worker_id
    )
    return _json(command.to_json())


@router.post("/api/commands/{event_id}/children", status_code=201)
async def start_child(request: Request, event_id: str, body: ChildRequest) -> dict[str, Any]:
    """A worker starts a sub-playbook for the command it holds (a pipeline's playbook item)."""
    given = [x for x in (body.path, body.catalog_id) if x is not None]
    if len(given) != 1:
        raise RequestError("give exactly one of `path` or `catalog_id`")
    child = await _orchestrator(request).workers.start_child(
        _parse_id(event_id, "command"),
        path=body.path,
        catalog_id=body.catalog_id,
        version=body.version,
        payload=body.payload,
    )
    return {"execution_id": str(child), "status": "RUNNING"}


@router.get("/api/commands/{event_id}/children/{child_id}")
async def get_child(
    request: Request,
    event_id: str,
    child_id: str,
    return_step: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    return _json(
        await _orchestrator(request).workers.child(
            _parse_id(event_id, "command"), _parse_id(child_id, "execution"), return_step
        )
    )


@router.post("/api/commands/{event_id}/children/{child_id}/cancel")
async def cancel_child(
    request: Request,
    event_id: str,
    child_id: str,
    body: Annotated[CancelRequest | None, Body()] = None,
) -> dict[str, Any]:
    child = _parse_id(child_id, "execution")
    status = await _orchestrator(request).workers.cancel_child(
        _parse_id(event_id, "command"), child, body.reason if body else "cancelled by its parent"
    )
    return {"execution_id": str(child), "status": status}


@router.post("/api/commands/{event_id}/lease")
async def renew_lease(request: Request, event_id: str, body: LeaseRequest) -> dict[str, Any]:
    """Extend the claim of a running attempt; the answer says if it should keep going."""
    reply = await _orchestrator(request).workers.renew_lease(
        _parse_id(event_id, "command"), body.attempt
    )
    return reply.to_json()


@router.post("/api/commands/{event_id}/retrying")
async def retrying(request: Request, event_id: str, body: RetryingRequest) -> dict[str, Any]:
    """A policy retry of a running attempt, recorded as a `command.retrying` event at once
    (clients show it while the step runs). 409 when the attempt no longer runs."""
    await _orchestrator(request).flow.retrying(
        _parse_id(event_id, "command"),
        body.attempt,
        body.worker_id,
        Retry(body.item, body.try_, body.attempts, body.delay, body.error),
    )
    return {"recorded": True}


@router.post("/api/events")
async def post_event(request: Request, body: EventRequest) -> Response:
    """A worker's event. `command.claimed` is the seed's claim; the outcome events record the
    result and let the engine decide what runs next."""
    orchestrator = _orchestrator(request)
    if body.event_type == EventType.COMMAND_CLAIMED.value:
        return _json(await _claim_event(orchestrator, body))
    return _json((await orchestrator.report(_report_of(body))).to_json())


@router.post("/api/events/batch")
async def post_events(request: Request, body: EventBatchRequest) -> Response:
    """Several worker events in one round trip; each answered as `/api/events` would. The
    outcomes go to the server's one batching point together (grouped by execution there)."""
    return _json(await record_events(_orchestrator(request), body))


async def record_events(orchestrator: Orchestrator, body: EventBatchRequest) -> dict[str, Any]:
    """The answer of `POST /api/events/batch` (also served by `fastlane`)."""
    answers: list[Any] = [None] * len(body.events)
    reports: dict[int, Report] = {}
    claims: dict[int, Any] = {}
    for index, event in enumerate(body.events):
        try:
            if event.event_type == EventType.COMMAND_CLAIMED.value:
                claims[index] = _claim_event(orchestrator, event)
            else:
                reports[index] = _report_of(event)
        except NoetlError as exc:
            answers[index] = exc
    if claims:
        for index, answer in zip(claims, await _gather(claims.values()), strict=True):
            answers[index] = answer
    replies = await orchestrator.report_all(list(reports.values()))
    for index, reply in zip(reports, replies, strict=True):
        answers[index] = reply if isinstance(reply, Exception) else reply.to_json()
    results = [
        {"status": status_of(a), "body": body_of(a)}
        if isinstance(a, Exception)
        else {"status": 200, "body": a}
        for a in answers
    ]
    return {"results": results}


async def _gather(work: Any) -> list[Any]:
    answers = await asyncio.gather(*work, return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, NoetlError):
            raise answer
    return answers


async def _claim_event(orchestrator: Orchestrator, body: EventRequest) -> dict[str, Any]:
    if body.event_id is None:
        raise RequestError("command.claimed needs `event_id` (the command.issued event)")
    return (await orchestrator.workers.claim(body.event_id, body.worker_id)).to_json()


def _report_of(body: EventRequest) -> Report:
    """The typed report of an outcome event; RequestError when a field it needs is missing."""
    if body.command_id is None or body.attempt is None:
        raise RequestError(f"{body.event_type} needs `command_id` and `attempt`")
    if body.event_type == EventType.COMMAND_FAILED.value and not body.error:
        raise RequestError("command.failed needs `error`")
    outcome = Outcome(
        ok=body.event_type == EventType.COMMAND_COMPLETED.value,
        result=body.result,
        error=body.error,
        duration=body.duration,
        variables=body.variables or {},
        problems=tuple(body.problems or ()),
        log={str(k): v for k, v in body.log.items()} if body.log else {},
        masked=body.masked,
        error_fields=body.error_fields.model_dump(exclude_none=True) if body.error_fields else {},
    )
    return Report(
        body.execution_id, body.command_id, body.attempt, body.worker_id, outcome, body.takes_next
    )


@router.post("/api/workers/heartbeat")
async def worker_heartbeat(request: Request, body: WorkerHeartbeat) -> dict[str, Any]:
    async with _orchestrator(request).pool.connection() as conn:
        await workers.heartbeat(
            conn,
            body.worker_id,
            body.hostname,
            body.concurrency,
            body.status,
            body.running,
            body.commands,
        )
    return {"status": "ok"}


@router.get("/api/workers")
async def list_workers(request: Request) -> dict[str, Any]:
    async with _orchestrator(request).pool.connection() as conn:
        rows = await workers.list_workers(conn)
    return {
        "items": [
            {
                **row,
                "started_at": row["started_at"].isoformat(),
                "heartbeat_at": row["heartbeat_at"].isoformat(),
            }
            for row in rows
        ]
    }
