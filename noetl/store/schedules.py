"""`noetl.schedule` and `noetl.schedule_tick`: schedules, and the ticks they handled."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

_COLUMNS = (
    "schedule_id, path, version, cron, every_seconds, timezone, payload, enabled, overlap,"
    " catch_up, next_fire_at, last_execution_id, created_at, updated_at"
)


async def insert(conn: AsyncConnection[Any], row: dict[str, Any]) -> dict[str, Any]:
    cur = await conn.execute(
        "INSERT INTO noetl.schedule (schedule_id, path, version, cron, every_seconds, timezone,"
        " payload, enabled, overlap, catch_up, next_fire_at)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (
            row["schedule_id"],
            row["path"],
            row["version"],
            row["cron"],
            row["every_seconds"],
            row["timezone"],
            Jsonb(row["payload"]),
            row["enabled"],
            row["overlap"],
            row["catch_up"],
            row["next_fire_at"],
        ),
    )
    found: dict[str, Any] | None = await cur.fetchone()
    assert found is not None
    return found


async def get(conn: AsyncConnection[Any], schedule_id: int) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM noetl.schedule WHERE schedule_id = %s", (schedule_id,)
    )
    return await cur.fetchone()


async def list_all(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM noetl.schedule ORDER BY schedule_id")
    return await cur.fetchall()


async def delete(conn: AsyncConnection[Any], schedule_id: int) -> bool:
    cur = await conn.execute("DELETE FROM noetl.schedule WHERE schedule_id = %s", (schedule_id,))
    return cur.rowcount > 0


async def set_enabled(
    conn: AsyncConnection[Any], schedule_id: int, enabled: bool, next_fire_at: datetime | None
) -> dict[str, Any] | None:
    """Pause or resume; a resumed schedule's next tick is given (counted from now)."""
    cur = await conn.execute(
        "UPDATE noetl.schedule SET enabled = %s,"
        " next_fire_at = COALESCE(%s, next_fire_at), updated_at = now()"
        f" WHERE schedule_id = %s RETURNING {_COLUMNS}",
        (enabled, next_fire_at, schedule_id),
    )
    return await cur.fetchone()


async def due_ids(conn: AsyncConnection[Any], limit: int = 50) -> list[dict[str, Any]]:
    """Enabled schedules whose next tick has come (each is then handled in its own
    transaction, `lock_if_due`)."""
    cur = await conn.execute(
        "SELECT schedule_id FROM noetl.schedule WHERE enabled AND next_fire_at <= now()"
        " ORDER BY next_fire_at LIMIT %s",
        (limit,),
    )
    return await cur.fetchall()


async def lock_if_due(conn: AsyncConnection[Any], schedule_id: int) -> dict[str, Any] | None:
    """The schedule, locked, if it is still enabled and due and no other server holds it."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS}, now() AS now FROM noetl.schedule"
        " WHERE schedule_id = %s AND enabled AND next_fire_at <= now()"
        " FOR UPDATE SKIP LOCKED",
        (schedule_id,),
    )
    return await cur.fetchone()


async def set_tick_outcome(
    conn: AsyncConnection[Any], schedule_id: int, tick: datetime, outcome: str
) -> None:
    await conn.execute(
        "UPDATE noetl.schedule_tick SET outcome = %s WHERE schedule_id = %s AND tick = %s",
        (outcome, schedule_id, tick),
    )


async def claim_tick(
    conn: AsyncConnection[Any], schedule_id: int, tick: datetime, outcome: str
) -> bool:
    """Record a tick as handled; False when it already was (by any server)."""
    cur = await conn.execute(
        "INSERT INTO noetl.schedule_tick (schedule_id, tick, outcome) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING tick",
        (schedule_id, tick, outcome),
    )
    return await cur.fetchone() is not None  # (rowcount is unknown in pipeline mode)


async def record_start(
    conn: AsyncConnection[Any], schedule_id: int, tick: datetime, execution_id: int
) -> None:
    await conn.execute(
        "UPDATE noetl.schedule_tick SET execution_id = %s WHERE schedule_id = %s AND tick = %s",
        (execution_id, schedule_id, tick),
    )
    await conn.execute(
        "UPDATE noetl.execution SET schedule_id = %s WHERE execution_id = %s",
        (schedule_id, execution_id),
    )
    await conn.execute(
        "UPDATE noetl.schedule SET last_execution_id = %s WHERE schedule_id = %s",
        (execution_id, schedule_id),
    )


async def advance(conn: AsyncConnection[Any], schedule_id: int, next_fire_at: datetime) -> None:
    await conn.execute(
        "UPDATE noetl.schedule SET next_fire_at = %s, updated_at = now() WHERE schedule_id = %s",
        (next_fire_at, schedule_id),
    )


async def still_running(conn: AsyncConnection[Any], execution_id: int | None) -> bool:
    if execution_id is None:
        return False
    cur = await conn.execute(
        "SELECT status FROM noetl.execution WHERE execution_id = %s", (execution_id,)
    )
    row = await cur.fetchone()
    return row is not None and row["status"] == "RUNNING"


async def ticks(
    conn: AsyncConnection[Any], schedule_id: int, limit: int = 20
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT tick, execution_id, outcome, created_at FROM noetl.schedule_tick"
        " WHERE schedule_id = %s ORDER BY tick DESC LIMIT %s",
        (schedule_id, limit),
    )
    return await cur.fetchall()
