"""`noetl.worker` (registry and heartbeats) and `noetl.lease` (leader election)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection


async def heartbeat(
    conn: AsyncConnection[Any],
    worker_id: str,
    hostname: str,
    concurrency: int,
    status: str,
    running: int,
    commands: list[int] | None = None,
) -> None:
    """`commands`: the event ids of the commands the worker holds (None: it does not say)."""
    await conn.execute(
        "INSERT INTO noetl.worker (worker_id, hostname, concurrency, status, running, commands)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (worker_id) DO UPDATE SET"
        " hostname = EXCLUDED.hostname, concurrency = EXCLUDED.concurrency,"
        " status = EXCLUDED.status, running = EXCLUDED.running,"
        " commands = EXCLUDED.commands, heartbeat_at = now()",
        (worker_id, hostname, concurrency, status, running, commands),
    )


async def list_workers(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT worker_id, hostname, concurrency, status, running, started_at, heartbeat_at"
        " FROM noetl.worker ORDER BY worker_id"
    )
    return await cur.fetchall()


async def acquire_lease(conn: AsyncConnection[Any], name: str, holder: str, seconds: float) -> bool:
    """Take or renew the named lease; True when `holder` holds it now."""
    cur = await conn.execute(
        "INSERT INTO noetl.lease (name, holder, lease_until)"
        " VALUES (%s, %s, now() + make_interval(secs => %s))"
        " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,"
        " lease_until = EXCLUDED.lease_until"
        " WHERE noetl.lease.holder = EXCLUDED.holder OR noetl.lease.lease_until < now()"
        " RETURNING holder",
        (name, holder, seconds),
    )
    return await cur.fetchone() is not None
