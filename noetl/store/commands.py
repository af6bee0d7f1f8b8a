"""`noetl.command`: the outbox and claim projection (PENDING → CLAIMED → terminal)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncClientCursor, AsyncConnection
from psycopg.rows import dict_row

from noetl.protocol.command import LeaseReply
from noetl.protocol.events import CommandStatus
from noetl.store import prepared

_SELECT = (
    "SELECT event_id, execution_id, command_id, step, iteration, tool, input, status, attempt,"
    " worker_id, lease_until, notified_at, publish_count, lease_until < now() AS lease_expired"
    " FROM noetl.command"
)


async def get_by_event(
    conn: AsyncConnection[Any], event_id: int, *, lock: bool = False
) -> dict[str, Any] | None:
    sql = f"{_SELECT} WHERE event_id = %s" + (" FOR UPDATE" if lock else "")
    cur = await conn.execute(sql, (event_id,))
    return await cur.fetchone()


_LOCK_EXECUTION = (
    "SELECT execution_id, catalog_id, status, state_version,"
    " CASE WHEN state_version = %s THEN NULL ELSE state END AS state,"
    " parent_execution_id, parent_command_id"
    " FROM noetl.execution WHERE execution_id = %s FOR UPDATE"
)
_LOCK_COMMANDS = (
    f"{_SELECT} WHERE execution_id = %s AND command_id = ANY(%s) ORDER BY command_id FOR UPDATE"
)


CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"


async def begin_locked(
    conn: AsyncConnection[Any],
    execution_id: int,
    command_ids: Sequence[str],
    known_version: int = -1,
) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    """BEGIN, then lock the execution row and its command rows (in command_id order), in ONE
    round trip: the three statements go as one simple query (the locks as prepared
    statements, `store.prepared`), their parameters written in by `prepared.run`. Always
    the execution first, so lockers never deadlock. The transaction stays open on `conn`:
    end it with `store.decisions.commit` (or ROLLBACK).

    The row's `state` is None when its `state_version` is `known_version`: the caller holds
    that snapshot already (`server.states`), and the lock keeps it current until COMMIT.

    The transaction plans its prepared statements for their parameters each time
    (`plan_cache_mode`): after five runs PostgreSQL may keep a generic plan, and the one it
    chose for these grew with the execution's commands and events (a 20,000-item loop's
    report transactions went from 9 to 19 ms as it ran: half the items/s of 2,000 items)."""
    lock_execution = await prepared.execute_sql(conn, _LOCK_EXECUTION)
    lock_commands = await prepared.execute_sql(conn, _LOCK_COMMANDS)
    cur = AsyncClientCursor(conn, row_factory=dict_row)
    await prepared.run(
        cur,
        f"BEGIN; {CUSTOM_PLANS}; {lock_execution}; {lock_commands}",
        (known_version, execution_id, execution_id, list(command_ids)),
    )
    cur.nextset()  # past BEGIN's result
    cur.nextset()  # past SET's
    execution = await cur.fetchone()
    cur.nextset()
    return execution, {row["command_id"]: row for row in await cur.fetchall()}


async def get_by_command_id(
    conn: AsyncConnection[Any], execution_id: int, command_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    sql = f"{_SELECT} WHERE execution_id = %s AND command_id = %s" + (" FOR UPDATE" if lock else "")
    cur = await conn.execute(sql, (execution_id, command_id))
    return await cur.fetchone()


async def claim(
    conn: AsyncConnection[Any],
    event_ids: Sequence[int],
    claim_event_ids: Sequence[int],
    worker_id: str,
    lease_seconds: float,
    max_attempts: int,
) -> dict[int, dict[str, Any]]:
    """Take the next attempt of each command and append its `command.claimed`, all in one
    statement. A command is taken only when PENDING, or CLAIMED by an attempt whose lease
    expired, and attempts remain; the caller asks `get_by_event` why the others were not.
    Returns the claimed rows by event id.
    """
    cur = await conn.execute(
        "WITH wanted AS ("
        " SELECT * FROM unnest(%(e)s::bigint[], %(ids)s::bigint[]) AS w(event_id, claim_id)"
        "), claimed AS ("
        " UPDATE noetl.command c SET status = 'CLAIMED', attempt = c.attempt + 1,"
        "  worker_id = %(w)s, lease_until = now() + make_interval(secs => %(lease)s),"
        "  updated_at = now()"
        " FROM wanted WHERE c.event_id = wanted.event_id AND c.attempt < %(max)s"
        "  AND (c.status = 'PENDING' OR (c.status = 'CLAIMED' AND c.lease_until < now()))"
        " RETURNING c.event_id, c.execution_id, c.command_id, c.step, c.iteration, c.tool,"
        "  c.input, c.attempt, wanted.claim_id"
        "), appended AS ("
        " INSERT INTO noetl.event (execution_id, event_id, event_type, step, command_id,"
        "  attempt, worker_id, status)"
        " SELECT execution_id, claim_id, 'command.claimed', step, command_id, attempt, %(w)s,"
        "  'CLAIMED' FROM claimed"
        ") SELECT * FROM claimed",
        {
            "w": worker_id,
            "lease": lease_seconds,
            "e": list(event_ids),
            "max": max_attempts,
            "ids": list(claim_event_ids),
        },
    )
    return {row["event_id"]: row for row in await cur.fetchall()}


async def claim_for_server(
    conn: AsyncConnection[Any], execution_id: int, command_ids: Sequence[str], holder: str
) -> None:
    """Commands the server runs itself (sub-playbooks): claimed with no lease, so neither
    workers nor the relay ever take them."""
    if command_ids:
        await conn.execute(
            "UPDATE noetl.command SET status = 'CLAIMED', attempt = 1, worker_id = %s,"
            " lease_until = NULL, notified_at = now() WHERE execution_id = %s"
            " AND command_id = ANY(%s)",
            (holder, execution_id, list(command_ids)),
        )


async def renew_lease(
    conn: AsyncConnection[Any], event_id: int, attempt: int, lease_seconds: float
) -> LeaseReply | None:
    """Extend a live claim of `attempt`; None when the command does not exist."""
    cur = await conn.execute(
        "UPDATE noetl.command SET lease_until = CASE WHEN status = 'CLAIMED' AND attempt = %s"
        " THEN now() + make_interval(secs => %s) ELSE lease_until END"
        " WHERE event_id = %s RETURNING status, attempt",
        (attempt, lease_seconds, event_id),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return LeaseReply(CommandStatus(row["status"]), superseded=row["attempt"] != attempt)


async def mark_notified(conn: AsyncConnection[Any], event_ids: Sequence[int]) -> None:
    if event_ids:
        await conn.execute(
            "UPDATE noetl.command SET notified_at = now(), publish_count = publish_count + 1"
            " WHERE event_id = ANY(%s)",
            (list(event_ids),),
        )


async def due_for_relay(
    conn: AsyncConnection[Any], older_than: float, silent_for: float | None, limit: int = 500
) -> list[dict[str, Any]]:
    """PENDING commands not notified for `older_than` s, and claims whose lease expired while
    their worker does not hold them: no heartbeat for `silent_for` s, no such worker, or a
    heartbeat received after the lease lapsed whose list of held commands leaves it out (the
    answer that handed the command over was lost: the worker never learned of it, so it
    neither runs nor renews it). A live worker that holds a lapsed claim (the server was down,
    so it could not renew) keeps it and reports when it can; so does one that does not list
    its commands. `silent_for=None`: heartbeats cannot be judged yet (the server just
    started), so no claim is taken back. Only the columns the relay needs: a row whose input
    no codec can read is still relayed."""
    lapsed = (
        "FALSE"
        if silent_for is None
        else "c.status = 'CLAIMED' AND c.lease_until < now() AND NOT EXISTS ("
        " SELECT 1 FROM noetl.worker w WHERE w.worker_id = c.worker_id"
        "  AND w.heartbeat_at >= now() - make_interval(secs => %(silent)s)"
        "  AND (w.commands IS NULL OR w.heartbeat_at <= c.lease_until"
        "   OR c.event_id = ANY(w.commands)))"
    )
    cur = await conn.execute(
        "SELECT event_id, execution_id, command_id, step, status, attempt, worker_id,"
        " publish_count FROM noetl.command c"
        f" WHERE (c.status = 'PENDING' OR ({lapsed}))"
        " AND (c.notified_at IS NULL"
        "  OR c.notified_at < now() - make_interval(secs => %(older)s))"
        " ORDER BY c.event_id LIMIT %(limit)s",
        {"older": older_than, "silent": silent_for, "limit": limit},
    )
    return await cur.fetchall()


async def release_dead_workers(conn: AsyncConnection[Any], silent_for: float) -> list[int]:
    """End the leases of claims held by workers whose last heartbeat is older than
    `silent_for` seconds (killed, not stopped), so the relay republishes them now rather than
    when the lease runs out. Returns the released commands' event ids."""
    cur = await conn.execute(
        "UPDATE noetl.command c SET lease_until = now(), notified_at = NULL, updated_at = now()"
        " FROM noetl.worker w WHERE c.status = 'CLAIMED' AND c.lease_until > now()"
        " AND c.worker_id = w.worker_id"
        " AND w.heartbeat_at < now() - make_interval(secs => %s)"
        " RETURNING c.event_id",
        (silent_for,),
    )
    return [row["event_id"] for row in await cur.fetchall()]
