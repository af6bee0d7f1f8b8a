"""Loop data in `noetl.event`: a list loop's items, a finished loop's iteration results."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

RESULTS_PAGE = 20_000  # rows per read: a million results never sit in memory twice


async def items(
    conn: AsyncConnection[Any], execution_id: int, step: str, run: int
) -> list[Any] | None:
    """The items a loop's `step.enter` event recorded, or None."""
    cur = await conn.execute(
        "SELECT payload->'items' AS items FROM noetl.event"
        " WHERE execution_id = %s AND event_type = 'step.enter' AND step = %s"
        " AND (payload->>'run')::int = %s AND payload ? 'items'",
        (execution_id, step, run),
    )
    row = await cur.fetchone()
    return None if row is None else list(row["items"])


async def results(
    conn: AsyncConnection[Any], execution_id: int, step: str, prefix: str
) -> list[Any]:
    """The results of the completed iterations whose command ids start with `prefix`
    (`<execution>:<step>[#run][`), indexed by iteration, None where there is none; read
    from their `command.completed` (or a re-run's `command.reused`) events a page at a time."""
    found: list[Any] = []
    after = 0
    cur = conn.cursor(row_factory=tuple_row)
    while True:
        await cur.execute(
            "SELECT event_id, substr(command_id, %s), result FROM noetl.event"
            " WHERE execution_id = %s AND event_id > %s"
            " AND event_type IN ('command.completed', 'command.reused')"
            " AND step = %s AND left(command_id, %s) = %s ORDER BY event_id LIMIT %s",
            (len(prefix) + 1, execution_id, after, step, len(prefix), prefix, RESULTS_PAGE),
        )
        rows = await cur.fetchall()
        for event_id, tail, result in rows:
            after = event_id
            if tail.endswith("]") and tail[:-1].isdigit():
                index = int(tail[:-1])
                if len(found) <= index:
                    found.extend([None] * (index + 1 - len(found)))
                found[index] = result
        if len(rows) < RESULTS_PAGE:
            return found
