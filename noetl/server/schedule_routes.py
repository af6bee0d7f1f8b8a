"""`/api/schedules`: start a registered playbook on a cron expression or an interval."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field

from noetl.errors import NotFoundError
from noetl.schedule import timing
from noetl.server.scheduler import timing_of
from noetl.server.schemas import Body, PortableObject
from noetl.server.service import Orchestrator
from noetl.store import catalog, schedules

router = APIRouter()


class ScheduleRequest(Body):
    path: str = Field(min_length=1, max_length=500, description="Catalog path of the playbook")
    version: int | None = Field(default=None, ge=1, description="Default: the latest at each tick")
    cron: str | None = Field(default=None, max_length=200, description="e.g. '*/5 * * * *'")
    every: str | float | None = Field(default=None, description="e.g. '30s', '5m', '1h', 90")
    payload: PortableObject = Field(default_factory=dict)
    enabled: bool = True
    timezone: str = Field(default="UTC", max_length=100, description="IANA zone cron is read in")
    overlap: Literal["skip", "allow"] = Field(
        default="skip", description="skip: no new run while the previous one still runs"
    )
    catch_up: bool = Field(
        default=False, description="Fire ticks missed while no server ran (default: skip them)"
    )


def _orchestrator(request: Request) -> Orchestrator:
    orchestrator: Orchestrator = request.app.state.orchestrator
    return orchestrator


def view(row: dict[str, Any], ticks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body = {
        "schedule_id": str(row["schedule_id"]),
        "path": row["path"],
        "version": row["version"],
        "cron": row["cron"],
        "every_seconds": row["every_seconds"],
        "timezone": row["timezone"],
        "payload": row["payload"],
        "enabled": row["enabled"],
        "overlap": row["overlap"],
        "catch_up": row["catch_up"],
        "next_fire_at": row["next_fire_at"].isoformat() if row["enabled"] else None,
        "last_execution_id": None
        if row["last_execution_id"] is None
        else str(row["last_execution_id"]),
        "created_at": row["created_at"].isoformat(),
    }
    if ticks is not None:
        body["ticks"] = [
            {
                "tick": t["tick"].isoformat(),
                "execution_id": None if t["execution_id"] is None else str(t["execution_id"]),
                "outcome": t["outcome"],
            }
            for t in ticks
        ]
    return body


@router.post("/api/schedules", status_code=201)
async def create(request: Request, body: ScheduleRequest) -> dict[str, Any]:
    """A schedule; the playbook must be registered (404 otherwise)."""
    when = timing(body.cron, body.every, body.timezone)
    orchestrator = _orchestrator(request)
    async with orchestrator.pool.connection() as conn:
        if (
            await catalog.get_entry(conn, path=body.path, version=body.version, content=False)
            is None
        ):
            version = f" version {body.version}" if body.version else ""
            raise NotFoundError(f"playbook {body.path!r}{version} is not registered")
        row = await schedules.insert(
            conn,
            {
                "schedule_id": orchestrator.new_id(),
                "path": body.path,
                "version": body.version,
                "cron": when.cron,
                "every_seconds": when.every,
                "timezone": when.timezone,
                "payload": body.payload,
                "enabled": body.enabled,
                "overlap": body.overlap,
                "catch_up": body.catch_up,
                "next_fire_at": when.next_after(datetime.now(UTC)),
            },
        )
    return view(row)


@router.get("/api/schedules")
async def list_schedules(request: Request) -> dict[str, Any]:
    async with _orchestrator(request).pool.connection() as conn:
        rows = await schedules.list_all(conn)
    return {"items": [view(row) for row in rows]}


@router.get("/api/schedules/{schedule_id}")
async def get_schedule(request: Request, schedule_id: str) -> dict[str, Any]:
    """A schedule with its most recent ticks (started, skipped and why)."""
    sid = _id(schedule_id)
    async with _orchestrator(request).pool.connection() as conn:
        row = await schedules.get(conn, sid)
        if row is None:
            raise NotFoundError(f"schedule {schedule_id} does not exist")
        ticks = await schedules.ticks(conn, sid)
    return view(row, ticks)


@router.delete("/api/schedules/{schedule_id}")
async def delete_schedule(request: Request, schedule_id: str) -> dict[str, Any]:
    async with _orchestrator(request).pool.connection() as conn:
        if not await schedules.delete(conn, _id(schedule_id)):
            raise NotFoundError(f"schedule {schedule_id} does not exist")
    return {"schedule_id": schedule_id, "deleted": True}


@router.post("/api/schedules/{schedule_id}/pause")
async def pause(request: Request, schedule_id: str) -> dict[str, Any]:
    return await _set_enabled(request, schedule_id, False)


@router.post("/api/schedules/{schedule_id}/resume")
async def resume(request: Request, schedule_id: str) -> dict[str, Any]:
    """Ticks that passed while paused are not fired: the next one is counted from now."""
    return await _set_enabled(request, schedule_id, True)


async def _set_enabled(request: Request, schedule_id: str, enabled: bool) -> dict[str, Any]:
    sid = _id(schedule_id)
    async with _orchestrator(request).pool.connection() as conn, conn.transaction():
        row = await schedules.get(conn, sid)
        if row is None:
            raise NotFoundError(f"schedule {schedule_id} does not exist")
        next_fire_at = timing_of(row).next_after(datetime.now(UTC)) if enabled else None
        if enabled and row["enabled"]:
            next_fire_at = None  # already running: keep its place
        updated = await schedules.set_enabled(conn, sid, enabled, next_fire_at)
    assert updated is not None
    return view(updated)


def _id(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise NotFoundError(f"schedule {value!r} does not exist (ids are integers)") from None
