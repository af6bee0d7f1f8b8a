"""`noetl.event`: append-only. Inserts and reads, never updates or deletes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from noetl.protocol.records import EventRecord

COLUMNS = (
    "execution_id, event_id, parent_event_id, parent_execution_id, event_type, step, "
    "command_id, attempt, worker_id, status, payload, result, error, duration"
)
INSERT = f"INSERT INTO noetl.event ({COLUMNS}) VALUES ({', '.join(['%s'] * 14)})"


def _json(value: Any) -> Jsonb | None:
    return None if value is None else Jsonb(value)


def row(e: EventRecord) -> tuple[Any, ...]:
    return (
        e.execution_id,
        e.event_id,
        e.parent_event_id,
        e.parent_execution_id,
        e.event_type.value,
        e.step,
        e.command_id,
        e.attempt,
        e.worker_id,
        e.status,
        _json(e.payload),
        _json(e.result),
        e.error,
        e.duration,
    )


async def insert_events(conn: AsyncConnection[Any], events: Sequence[EventRecord]) -> None:
    """Append events; a unique-index conflict raises `psycopg.errors.UniqueViolation`."""
    if not events:
        return
    async with conn.cursor() as cur:
        await cur.executemany(INSERT, [row(e) for e in events])


async def list_events(
    conn: AsyncConnection[Any], execution_id: int, *, after: int = 0, limit: int = 1000
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {COLUMNS}, created_at FROM noetl.event"
        " WHERE execution_id = %s AND event_id > %s ORDER BY event_id LIMIT %s",
        (execution_id, after, limit),
    )
    return await cur.fetchall()


async def results_by_id(
    conn: AsyncConnection[Any], execution_id: int, event_ids: Sequence[int]
) -> dict[int, Any]:
    """The results the given events of an execution hold, by event id (found by their key)."""
    cur = await conn.execute(
        "SELECT event_id, result FROM noetl.event WHERE execution_id = %s AND event_id = ANY(%s)",
        (execution_id, list(event_ids)),
    )
    return {int(row["event_id"]): row["result"] for row in await cur.fetchall()}


async def payload_of(conn: AsyncConnection[Any], execution_id: int, event_id: int) -> Any:
    """The payload of one event of an execution (None when there is no such event)."""
    cur = await conn.execute(
        "SELECT payload FROM noetl.event WHERE execution_id = %s AND event_id = %s",
        (execution_id, event_id),
    )
    row = await cur.fetchone()
    return None if row is None else row["payload"]


async def completed_commands(conn: AsyncConnection[Any], execution_id: int) -> list[dict[str, Any]]:
    """The `command.completed` events of an execution (what a re-run may reuse), in order."""
    cur = await conn.execute(
        "SELECT command_id, step, result, payload FROM noetl.event"
        " WHERE execution_id = %s AND event_type = 'command.completed' ORDER BY event_id",
        (execution_id,),
    )
    return await cur.fetchall()


async def command_outputs(
    conn: AsyncConnection[Any],
    execution_id: int,
    *,
    step: str | None = None,
    after: int = 0,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Outcome events that carry what their tools printed (`payload.log`), in order."""
    cur = await conn.execute(
        "SELECT e.event_id, e.event_type, e.step, e.command_id, e.attempt, e.status,"
        " e.payload -> 'log' AS log, e.created_at, c.iteration FROM noetl.event e"
        " LEFT JOIN noetl.command c"
        "  ON c.execution_id = e.execution_id AND c.command_id = e.command_id"
        " WHERE e.execution_id = %s AND e.event_id > %s"
        " AND e.event_type IN ('command.completed', 'command.failed')"
        " AND e.payload ? 'log' AND (%s::text IS NULL OR e.step = %s)"
        " ORDER BY e.event_id LIMIT %s",
        (execution_id, after, step, step, limit),
    )
    return await cur.fetchall()
