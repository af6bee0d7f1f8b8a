"""Aggregates of an execution's events for the timeline and the step details of the UI.

Everything is grouped in SQL: a 100,000-item loop is one row per step, never one per item."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

_OUTCOMES = "('command.completed', 'command.failed', 'command.cancelled')"
_ENDS = "('command.completed', 'command.failed', 'command.cancelled', 'step.exit', 'step.skipped')"


async def step_spans(conn: AsyncConnection[Any], execution_id: int) -> list[dict[str, Any]]:
    """Per step: when its first command was issued and its last one ended, how many commands
    were issued, claimed (attempts), completed, failed and cancelled, and its last error."""
    cur = await conn.execute(
        "SELECT step,"
        " min(created_at) AS started_at,"
        " max(created_at) FILTER (WHERE event_type IN " + _ENDS + ") AS ended_at,"
        " count(*) FILTER (WHERE event_type = 'command.issued') AS commands,"
        " count(*) FILTER (WHERE event_type = 'command.claimed') AS attempts,"
        " count(*) FILTER (WHERE event_type = 'command.completed') AS completed,"
        " count(*) FILTER (WHERE event_type = 'command.failed') AS failed,"
        " count(*) FILTER (WHERE event_type = 'command.cancelled') AS cancelled,"
        " coalesce(max(attempt), 0) AS max_attempt"
        " FROM noetl.event WHERE execution_id = %s AND step IS NOT NULL"
        " GROUP BY step ORDER BY min(event_id)",  # no ordered aggregate: a hash, not a sort
        (execution_id,),
    )
    spans = await cur.fetchall()
    cur = await conn.execute(
        "SELECT DISTINCT ON (step) step, error FROM noetl.event"
        " WHERE execution_id = %s AND step IS NOT NULL AND error IS NOT NULL"
        " ORDER BY step, event_id DESC",
        (execution_id,),
    )
    errors = {row["step"]: row["error"] for row in await cur.fetchall()}
    return [{**span, "last_error": errors.get(span["step"])} for span in spans]


async def command_spans(
    conn: AsyncConnection[Any], execution_id: int, steps: Sequence[str]
) -> list[dict[str, Any]]:
    """Per command of the given steps: issued, first claimed and ended times, attempts, the
    outcome and the worker of the last attempt."""
    cur = await conn.execute(
        "SELECT command_id, step,"
        " min(created_at) FILTER (WHERE event_type = 'command.issued') AS issued_at,"
        " min(created_at) FILTER (WHERE event_type = 'command.claimed') AS claimed_at,"
        " max(created_at) FILTER (WHERE event_type IN " + _OUTCOMES + ") AS ended_at,"
        " count(*) FILTER (WHERE event_type = 'command.claimed') AS attempts,"
        " (array_agg(event_type ORDER BY event_id DESC)"
        "  FILTER (WHERE event_type IN " + _OUTCOMES + "))[1] AS outcome,"
        " (array_agg(worker_id ORDER BY event_id DESC)"
        "  FILTER (WHERE worker_id IS NOT NULL))[1] AS worker_id"
        " FROM noetl.event WHERE execution_id = %s AND command_id IS NOT NULL"
        " AND step = ANY(%s) GROUP BY command_id, step ORDER BY min(event_id)",
        (execution_id, list(steps)),
    )
    return await cur.fetchall()


async def last_event(
    conn: AsyncConnection[Any], execution_id: int, step: str, event_types: Sequence[str]
) -> dict[str, Any] | None:
    """The newest event of one of `event_types` for `step`."""
    cur = await conn.execute(
        "SELECT event_id, event_type, command_id, attempt, worker_id, payload, result, error,"
        " duration, created_at FROM noetl.event WHERE execution_id = %s AND step = %s"
        " AND event_type = ANY(%s) ORDER BY event_id DESC LIMIT 1",
        (execution_id, step, list(event_types)),
    )
    return await cur.fetchone()
