"""`noetl.execution`: one row per execution, the engine state snapshot and its status."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Json

_SUMMARY = (
    "execution_id, catalog_id, path, version, parent_execution_id, parent_command_id, status,"
    " result, error, created_at, updated_at, ended_at, rerun_of, schedule_id, deadline"
)


# New executions' rows, each with its first snapshot, status and result, at `state_version` 1:
# a start writes its row once, its first decision's other writes go beside it. One statement
# for any number of rows (the starts written together by `Flow._start_batch`): its text does
# not grow with them (`json_to_recordset`), so it stays prepared. `timeout`: seconds until
# the execution's deadline (null: no time limit).
INSERT_STARTED = (
    "INSERT INTO noetl.execution (execution_id, catalog_id, path, version, parent_execution_id,"
    " parent_command_id, status, state, state_version, result, error, rerun_of, deadline,"
    " ended_at)"
    " SELECT execution_id, catalog_id, path, version, parent_execution_id, parent_command_id,"
    "  status, state, 1, result, error, rerun_of, now() + make_interval(secs => timeout),"
    "  CASE WHEN status <> 'RUNNING' THEN now() END"
    " FROM json_to_recordset(%s) AS r(execution_id bigint, catalog_id bigint, path text,"
    " version int, parent_execution_id bigint, parent_command_id text, status text,"
    " state json, result json, error text, rerun_of bigint, timeout float8)"
)


async def insert_started(conn: AsyncConnection[Any], rows: list[dict[str, Any]]) -> None:
    """`INSERT_STARTED` inside the caller's transaction."""
    await conn.execute(INSERT_STARTED, (Json(rows),))


async def overdue(conn: AsyncConnection[Any], limit: int = 100) -> list[dict[str, Any]]:
    """Running executions past their deadline, with the time limit they had (seconds)."""
    cur = await conn.execute(
        "SELECT execution_id, extract(epoch FROM deadline - created_at)::float8 AS seconds"
        " FROM noetl.execution WHERE status = 'RUNNING' AND deadline < now()"
        " ORDER BY deadline LIMIT %s",
        (limit,),
    )
    return await cur.fetchall()


async def lock_execution(conn: AsyncConnection[Any], execution_id: int) -> dict[str, Any] | None:
    """The row with its state, locked until the transaction ends: one engine at a time."""
    cur = await conn.execute(
        "SELECT execution_id, catalog_id, status, state, parent_execution_id, parent_command_id"
        " FROM noetl.execution WHERE execution_id = %s FOR UPDATE",
        (execution_id,),
    )
    return await cur.fetchone()


async def get_execution(conn: AsyncConnection[Any], execution_id: int) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {_SUMMARY}, state FROM noetl.execution WHERE execution_id = %s", (execution_id,)
    )
    return await cur.fetchone()


async def get_detail(
    conn: AsyncConnection[Any], execution_id: int, known_version: int = -1
) -> dict[str, Any] | None:
    """`get_execution` for the detail clients poll: `state` is None when the row's
    `state_version` is `known_version` (the server holds that snapshot: `server.states`)."""
    cur = await conn.execute(
        f"SELECT {_SUMMARY}, state_version,"
        " CASE WHEN state_version = %s THEN NULL ELSE state END AS state"
        " FROM noetl.execution WHERE execution_id = %s",
        (known_version, execution_id),
    )
    return await cur.fetchone()


async def get_summary(conn: AsyncConnection[Any], execution_id: int) -> dict[str, Any] | None:
    """An execution's row without its state (cheap to poll)."""
    cur = await conn.execute(
        f"SELECT {_SUMMARY} FROM noetl.execution WHERE execution_id = %s", (execution_id,)
    )
    return await cur.fetchone()


async def ended_view(conn: AsyncConnection[Any], execution_id: int) -> dict[str, Any] | None:
    """`get_summary` with whether children of it still run (`children_running`): what
    settling an ended execution starts from, in one round trip."""
    cur = await conn.execute(
        f"SELECT {_SUMMARY}, EXISTS (SELECT 1 FROM noetl.execution c"
        "  WHERE c.parent_execution_id = e.execution_id AND c.status = 'RUNNING')"
        " AS children_running FROM noetl.execution e WHERE e.execution_id = %s",
        (execution_id,),
    )
    return await cur.fetchone()


async def nesting(conn: AsyncConnection[Any], execution_id: int, limit: int) -> int:
    """How many executions the chain from this one up through its parents holds (at most
    `limit` + 1 are counted)."""
    cur = await conn.execute(
        "WITH RECURSIVE chain(parent, n) AS ("
        " SELECT parent_execution_id, 1 FROM noetl.execution WHERE execution_id = %s"
        " UNION ALL SELECT e.parent_execution_id, c.n + 1 FROM noetl.execution e"
        " JOIN chain c ON e.execution_id = c.parent WHERE c.n <= %s"
        ") SELECT coalesce(max(n), 0) AS n FROM chain",
        (execution_id, limit),
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def running_children(conn: AsyncConnection[Any], execution_id: int) -> list[int]:
    cur = await conn.execute(
        "SELECT execution_id FROM noetl.execution"
        " WHERE parent_execution_id = %s AND status = 'RUNNING'",
        (execution_id,),
    )
    return [row["execution_id"] for row in await cur.fetchall()]


async def unsettled(conn: AsyncConnection[Any], settle_after: float) -> list[int]:
    """Executions to settle again after a crash between two transactions: children that ended
    without their parent being told, and parents that ended with children still running."""
    cur = await conn.execute(
        "SELECT CASE WHEN child.status <> 'RUNNING' THEN child.execution_id"
        " ELSE parent.execution_id END AS execution_id FROM noetl.execution child"
        " JOIN noetl.execution parent ON parent.execution_id = child.parent_execution_id"
        " LEFT JOIN noetl.command c ON c.execution_id = child.parent_execution_id"
        "  AND c.command_id = child.parent_command_id"
        " WHERE child.parent_command_id IS NOT NULL"
        " AND child.updated_at < now() - make_interval(secs => %s)"
        " AND ((child.status <> 'RUNNING' AND c.status = 'CLAIMED')"
        "  OR (child.status = 'RUNNING' AND parent.status <> 'RUNNING'))"
        " LIMIT 100",
        (settle_after,),
    )
    return [row["execution_id"] for row in await cur.fetchall()]


async def list_executions(
    conn: AsyncConnection[Any],
    *,
    status: str | None = None,
    limit: int = 100,
    path: str | None = None,
    before: int | None = None,
    after: int | None = None,
    parent: int | None = None,
    brief: bool = False,
    schedule: int | None = None,
) -> list[dict[str, Any]]:
    """Newest first. `path`: a case-insensitive substring; `before`/`after`: keyset cursors
    (execution ids) for the next older / newer page; `brief`: without the result."""
    columns = _SUMMARY.replace(" result,", " NULL::json AS result,") if brief else _SUMMARY
    where: list[str] = ["TRUE"]
    args: list[Any] = []
    if status is not None:
        where.append("status = %s")
        args.append(status)
    if path:
        where.append("path ILIKE %s")
        args.append(_contains(path))
    if parent is not None:
        where.append("parent_execution_id = %s")
        args.append(parent)
    if schedule is not None:
        where.append("schedule_id = %s")
        args.append(schedule)
    if before is not None:
        where.append("execution_id < %s")
        args.append(before)
    if after is not None:  # the page just newer than `after`: read upwards, return newest first
        where.append("execution_id > %s")
        args.append(after)
        cur = await conn.execute(
            f"SELECT * FROM (SELECT {columns} FROM noetl.execution WHERE {' AND '.join(where)}"
            " ORDER BY execution_id LIMIT %s) page ORDER BY execution_id DESC",
            (*args, limit),
        )
        return await cur.fetchall()
    cur = await conn.execute(
        f"SELECT {columns} FROM noetl.execution WHERE {' AND '.join(where)}"
        " ORDER BY execution_id DESC LIMIT %s",
        (*args, limit),
    )
    return await cur.fetchall()


def _contains(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, with its own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def quarantine(
    conn: AsyncConnection[Any],
    execution_id: int,
    event_id: int,
    error: str,
    status: str = "FAILED",
) -> bool:
    """End a RUNNING execution (FAILED or CANCELLED) without reading any of its JSON: the last
    resort for a row no component can process. Status, error, a `playbook.failed` or
    `playbook.cancelled` event, its open commands ended the same way. Returns False when it
    had already ended."""
    if status not in {"FAILED", "CANCELLED"}:
        raise ValueError(f"cannot end an execution as {status}")
    cur = await conn.execute(
        "UPDATE noetl.execution SET status = %s, error = %s, updated_at = now(),"
        " ended_at = now() WHERE execution_id = %s AND status = 'RUNNING' RETURNING execution_id",
        (status, error, execution_id),
    )
    if await cur.fetchone() is None:
        return False
    await conn.execute(
        "UPDATE noetl.command SET status = %s, lease_until = NULL, updated_at = now()"
        " WHERE execution_id = %s AND status IN ('PENDING', 'CLAIMED')",
        (status, execution_id),
    )
    await conn.execute(
        "INSERT INTO noetl.event (execution_id, event_id, event_type, status, error)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (execution_id, event_id, f"playbook.{status.lower()}", status, error),
    )
    return True
