"""JSON routes the UI reads besides the general API: a playbook's drawing, an execution's
timeline, live progress and one step's details. All under `/api`, so the token guards them."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from noetl import jsonfast
from noetl.dsl.model import Playbook
from noetl.errors import NotFoundError
from noetl.server import views
from noetl.server.service import Orchestrator
from noetl.store import catalog, events, executions, timeline
from noetl.ui.layout import HEIGHT, WIDTH, layout
from noetl.ui.snapshots import Snapshots, progress_of

router = APIRouter()

COMMANDS_DRAWN = 25  # steps with more commands (loops) are drawn as one aggregated bar
PREVIEW_BYTES = 65_536  # results larger than this are cut for display


def _orchestrator(request: Request) -> Orchestrator:
    orchestrator: Orchestrator = request.app.state.orchestrator
    return orchestrator


def _snapshots(request: Request, name: str) -> Snapshots[Any, Any]:
    found: Snapshots[Any, Any] = getattr(request.app.state, name)
    return found


def _id(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise NotFoundError(f"{what} {value!r} does not exist (ids are integers)") from None


def _json(body: Any) -> Response:
    """orjson, without FastAPI's generic encoder: open pages poll these routes."""
    return Response(jsonfast.dumps(body), media_type="application/json")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def preview(value: Any) -> Any:
    """`value`, or for a large one `{"truncated": true, "bytes": n, "preview": "..."}`."""
    if value is None:
        return None
    text = jsonfast.dumps(value)
    if len(text) <= PREVIEW_BYTES:
        return value
    head = text[:PREVIEW_BYTES].decode("utf-8", errors="ignore")
    return {"truncated": True, "bytes": len(text), "preview": head}


# -- catalog ------------------------------------------------------------------------------


@router.get("/api/catalog/versions")
async def catalog_versions(request: Request, path: Annotated[str, Query()]) -> Response:
    async with _orchestrator(request).pool.connection() as conn:
        rows = await catalog.list_versions(conn, path)
    if not rows:
        raise NotFoundError(f"playbook {path!r} is not registered")
    return _json({"path": path, "items": [views.catalog_entry(row) for row in rows]})


@router.get("/api/catalog/{catalog_id}")
async def catalog_entry(request: Request, catalog_id: str) -> Response:
    cid = _id(catalog_id, "catalog entry")
    async with _orchestrator(request).pool.connection() as conn:
        row = await catalog.get_entry(conn, catalog_id=cid)
    if row is None:
        raise NotFoundError(f"catalog entry {catalog_id} does not exist")
    return _json({**views.catalog_entry(row), "content": row["content"]})


@router.get("/api/catalog/{catalog_id}/graph")
async def catalog_graph(request: Request, catalog_id: str) -> Response:
    """The playbook's steps and arcs, placed for drawing (see `noetl.ui.layout`)."""
    playbook = await _orchestrator(request).playbook(_id(catalog_id, "catalog entry"))
    return Response(_drawing(playbook), media_type="application/json")


@lru_cache(maxsize=256)
def _drawing(playbook: Playbook) -> bytes:
    drawing = layout(playbook)
    return jsonfast.dumps(
        {
            "entry": drawing.entry,
            "width": drawing.width,
            "height": drawing.height,
            "box": {"width": WIDTH, "height": HEIGHT},
            "steps": [asdict(box) for box in drawing.boxes],
            "arcs": [asdict(line) for line in drawing.lines],
        }
    )


# -- executions ---------------------------------------------------------------------------


async def _execution(request: Request, eid: int) -> dict[str, Any]:
    async def load() -> dict[str, Any]:
        async with _orchestrator(request).pool.connection() as conn:
            row = await executions.get_execution(conn, eid)
        if row is None:
            raise NotFoundError(f"execution {eid} does not exist")
        return {
            **views.execution_summary(row),
            **progress_of(row),
            "result": preview(row["result"]),
        }

    found: dict[str, Any] = await _snapshots(request, "ui_progress").get(eid, load)
    return found


@router.get("/api/executions/{execution_id}/live")
async def live(
    request: Request,
    execution_id: str,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=0, le=1000)] = 200,
) -> Response:
    """What an open execution page polls: the status and each step's progress, and up to
    `limit` events after the cursor `after`; both shared by all pages for up to a second."""
    eid = _id(execution_id, "execution")
    execution = await _execution(request, eid)
    items: list[dict[str, Any]] = []
    if limit:

        async def load() -> list[dict[str, Any]]:
            async with _orchestrator(request).pool.connection() as conn:
                rows = await events.list_events(conn, eid, after=after, limit=limit)
            return [views.event(row) for row in rows]

        # Pages that follow the same execution ask for the same pages of its log.
        items = await _snapshots(request, "ui_events").get((eid, after, limit), load)
    cursor = items[-1]["event_id"] if items else str(after)
    return _json({"execution": execution, "events": items, "cursor": cursor})


@router.get("/api/executions/{execution_id}/timeline")
async def execution_timeline(request: Request, execution_id: str) -> Response:
    """Per step: first start, last end, commands, attempts and outcomes; per command for the
    steps with at most 25 commands (a loop's items are aggregated, never listed)."""
    eid = _id(execution_id, "execution")

    async def load() -> dict[str, Any]:
        async with _orchestrator(request).pool.connection() as conn:
            row = await executions.get_execution(conn, eid)
            if row is None:
                raise NotFoundError(f"execution {execution_id} does not exist")
            spans = await timeline.step_spans(conn, eid)
            few = [s["step"] for s in spans if s["commands"] <= COMMANDS_DRAWN]
            commands = await timeline.command_spans(conn, eid, few) if few else []
        by_step: dict[str, list[dict[str, Any]]] = {}
        for command in commands:
            by_step.setdefault(command["step"], []).append(
                {
                    **command,
                    "issued_at": _iso(command["issued_at"]),
                    "claimed_at": _iso(command["claimed_at"]),
                    "ended_at": _iso(command["ended_at"]),
                }
            )
        return {
            "execution_id": str(eid),
            "created_at": _iso(row["created_at"]),
            "ended_at": _iso(row["ended_at"]),
            "steps": [
                {
                    **span,
                    "started_at": _iso(span["started_at"]),
                    "ended_at": _iso(span["ended_at"]),
                    "commands_drawn": by_step.get(span["step"], []),
                }
                for span in spans
            ],
        }

    found: dict[str, Any] = await _snapshots(request, "ui_timeline").get(eid, load)
    return _json(found)


@router.get("/api/executions/{execution_id}/steps/{step}")
async def step_detail(request: Request, execution_id: str, step: str) -> Response:
    """One step's last result, last error (with the traceback the worker reported) and the
    template problems its last run met (`payload.problems` of its `step.exit`)."""
    eid = _id(execution_id, "execution")
    async with _orchestrator(request).pool.connection() as conn:
        row = await executions.get_execution(conn, eid)
        if row is None:
            raise NotFoundError(f"execution {execution_id} does not exist")
        state = (row["state"] or {}).get("steps", {}).get(step)
        if state is None:
            steps = (await _orchestrator(request).playbook(row["catalog_id"])).steps
            if step not in steps:
                raise NotFoundError(
                    f"execution {execution_id} has no step {step!r}"
                    f" (its playbook's steps: {', '.join(list(steps)[:20])})"
                )
        done = await timeline.last_event(conn, eid, step, ["step.exit", "command.completed"])
        failed = await timeline.last_event(conn, eid, step, ["command.failed"])
    return _json(
        {
            "execution_id": str(eid),
            "step": step,
            "status": state["status"] if state else "waiting",
            "runs": state["runs"] if state else 0,
            "result": preview(done["result"]) if done else None,
            "result_event_id": str(done["event_id"]) if done else None,
            "error": failed["error"] if failed else None,
            "error_event_id": str(failed["event_id"]) if failed else None,
            "error_attempt": failed["attempt"] if failed else None,
            "problems": _problems(done),
        }
    )


def _problems(event: dict[str, Any] | None) -> list[str]:
    """A `step.exit` event's template problems (a `when` that failed to render, a `set` value
    skipped): why an arc did not fire."""
    if event is None or event["event_type"] != "step.exit":
        return []
    payload = event["payload"] if isinstance(event["payload"], dict) else {}
    return [str(problem) for problem in payload.get("problems") or []]
