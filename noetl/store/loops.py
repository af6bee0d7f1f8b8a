"""Loop data in `noetl.event`: a list loop's items, a finished loop's iteration results."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection


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
) -> dict[int, Any]:
    """Iteration → result of the completed iterations whose command ids start with `prefix`
    (`<execution>:<step>[#run][`), from their `command.completed` events."""
    cur = await conn.execute(
        "SELECT substr(command_id, %s) AS tail, result FROM noetl.event"
        " WHERE execution_id = %s AND event_type = 'command.completed' AND step = %s"
        " AND left(command_id, %s) = %s",
        (len(prefix) + 1, execution_id, step, len(prefix), prefix),
    )
    found: dict[int, Any] = {}
    for row in await cur.fetchall():
        tail = row["tail"]
        if tail.endswith("]") and tail[:-1].isdigit():
            found[int(tail[:-1])] = row["result"]
    return found
