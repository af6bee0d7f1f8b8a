"""A decision's writes as ONE statement: its events, its commands, the commands it settles or
cancels, and the execution's new state.

One data-modifying `WITH` instead of a statement per row and table: every statement costs a
parse/bind/execute on the server and, in psycopg, a conversion of the query and a wake-up of
the database; a step of a sequential chain wrote twelve of them per report, this one (and the
transaction's BEGIN, lock and COMMIT). The parts of one statement see the same snapshot and
must not touch the same row twice, so: a command issued and cancelled by the same decision is
inserted CANCELLED; one the decision hands over (continuation) is inserted CLAIMED (its
`command.claimed` event comes with the events); a command both settled (its outcome) and
cancelled keeps the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg.errors
from psycopg import AsyncConnection
from psycopg.types.json import Json

from noetl.protocol.events import CommandStatus
from noetl.protocol.records import CommandRecord, EventRecord
from noetl.store import executions, prepared
from noetl.store.events import COLUMNS

# The rows go as one JSON document (`json_to_recordset`): one parameter, dumped by orjson, and
# a statement text that does not grow with the rows, so psycopg's query cache (50 parameters at
# most) and PostgreSQL's prepared statements hold.
_EVENT = (
    f"INSERT INTO noetl.event ({COLUMNS}) SELECT {COLUMNS} FROM json_to_recordset(%s)"
    " AS r(execution_id bigint, event_id bigint, parent_event_id bigint,"
    " parent_execution_id bigint, event_type text, step text, command_id text, attempt int,"
    " worker_id text, status text, payload jsonb, result jsonb, error text, duration float8)"
)
_COMMAND = (
    "INSERT INTO noetl.command (event_id, execution_id, command_id, step, iteration, tool, input,"
    " status, attempt, worker_id, lease_until, notified_at, publish_count)"
    " SELECT event_id, execution_id, command_id, step, iteration, tool, input, status, attempt,"
    "  worker_id, now() + make_interval(secs => lease), now(), 1"  # published after commit
    " FROM json_to_recordset(%s) AS r(event_id bigint, execution_id bigint, command_id text,"
    " step text, iteration int, tool jsonb, input jsonb, status text, attempt int,"
    " worker_id text, lease float8)"
)
# The settled commands joined with their ids. Under a generic plan (the held path keeps them)
# PostgreSQL may still join them with every command of the execution (a hash join over an
# index search by the execution: ~10,000 rows per report of a 20,000-item loop), so the held
# path writes its reported commands' outcomes row by row in `noetl.write_held` (migration
# 0013) and uses this only for commands a decision cancels; the locked path plans it for its
# parameters (`commands.begin_locked`).
_SETTLE = (
    "UPDATE noetl.command c SET status = %s, lease_until = NULL, updated_at = now()"
    " FROM unnest(%s::text[]) AS settled(command_id)"
    " WHERE c.execution_id = %s AND c.command_id = settled.command_id"
)
_STATE = (
    "UPDATE noetl.execution SET state = %s, state_version = state_version + 1,"
    " status = %s, result = %s, error = %s,"
    " updated_at = now(), ended_at = CASE WHEN %s <> 'RUNNING' THEN now() ELSE ended_at END"
    " WHERE execution_id = %s"
)


@dataclass(frozen=True)
class Claim:
    """The command a decision hands to the reporting worker: attempt 1, held by `worker_id`."""

    command_id: str
    worker_id: str
    lease_seconds: float


@dataclass(frozen=True)
class State:
    """The execution row's new snapshot, status, result and error."""

    snapshot: dict[str, Any]
    status: str
    result: Any
    error: str | None


def statement(
    execution_id: int,
    *,
    events: Sequence[EventRecord] = (),
    commands: Sequence[CommandRecord] = (),
    cancelled: Sequence[str] = (),
    settled: Mapping[str, Sequence[str]] | None = None,
    claims: Sequence[Claim] = (),
    state: State | None = None,
) -> tuple[str, list[Any]] | None:
    """The SQL and parameters of the writes, or None when there is nothing to write."""
    parts: list[tuple[str, list[Any]]] = []
    if events:
        parts.append((_EVENT, [Json([_event_row(e) for e in events])]))
    if commands:
        dropped = set(cancelled)
        held = {claim.command_id: claim for claim in claims}
        rows = [_command_row(c, c.command_id in dropped, held.get(c.command_id)) for c in commands]
        parts.append((_COMMAND, [Json(rows)]))
    outcomes = {k: list(v) for k, v in (settled or {}).items() if v}
    kept = {c for ids in outcomes.values() for c in ids} | {c.command_id for c in commands}
    earlier = [c for c in dict.fromkeys(cancelled) if c not in kept]
    if earlier:
        outcomes = {CommandStatus.CANCELLED.value: earlier, **outcomes}
    for status, ids in outcomes.items():
        parts.append((_SETTLE, [status, ids, execution_id]))
    if state is not None:
        parts.append(
            (
                _STATE,
                [
                    Json(state.snapshot),
                    state.status,
                    Json(state.result),
                    state.error,
                    state.status,
                    execution_id,
                ],
            )
        )
    if not parts:
        return None
    *withs, (last, params) = parts
    if not withs:
        return last, params
    names = ", ".join(f"w{n} AS ({sql})" for n, (sql, _) in enumerate(withs))
    return f"WITH {names} {last}", [*(p for _, ps in withs for p in ps), *params]


def _event_row(e: EventRecord) -> dict[str, Any]:
    return {
        "execution_id": e.execution_id,
        "event_id": e.event_id,
        "parent_event_id": e.parent_event_id,
        "parent_execution_id": e.parent_execution_id,
        "event_type": e.event_type.value,
        "step": e.step,
        "command_id": e.command_id,
        "attempt": e.attempt,
        "worker_id": e.worker_id,
        "status": e.status,
        "payload": e.payload,
        "result": e.result,
        "error": e.error,
        "duration": e.duration,
    }


def _command_row(command: CommandRecord, cancelled: bool, claim: Claim | None) -> dict[str, Any]:
    held = claim is not None and not cancelled
    status = (
        CommandStatus.CANCELLED
        if cancelled
        else CommandStatus.CLAIMED
        if held
        else CommandStatus.PENDING
    )
    return {
        "event_id": command.event_id,
        "execution_id": command.execution_id,
        "command_id": command.command_id,
        "step": command.step,
        "iteration": command.iteration,
        "tool": command.tool,
        "input": command.input,
        "status": status.value,
        "attempt": 1 if held else 0,
        "worker_id": claim.worker_id if held and claim else None,
        "lease": claim.lease_seconds if held and claim else None,
    }


async def commit(conn: AsyncConnection[Any], last: Sequence[tuple[str, list[Any]]] = ()) -> None:
    """The transaction's last writes (`statement`s) and COMMIT in one round trip, as one
    simple query (prepared statements, `store.prepared`; parameters written in by
    `prepared.run`). A unique-index conflict raises
    `psycopg.errors.UniqueViolation` and leaves the transaction failed: roll it back."""
    if not last:
        await conn.execute("COMMIT")
        return
    statements = [await prepared.execute_sql(conn, text) for text, _ in last]
    sql = "; ".join([*statements, "COMMIT"])
    await prepared.write(conn, sql, [p for _, params in last for p in params])


async def commit_started(
    conn: AsyncConnection[Any],
    rows: Sequence[Mapping[str, Any]],
    last: Sequence[tuple[str, list[Any]]],
) -> None:
    """Executions started together, as one transaction in one round trip: BEGIN; their rows
    (`executions.INSERT_STARTED`: `rows` as its columns, `timeout` in seconds); each first
    decision's writes (`statement`s without the snapshot); COMMIT. A failure leaves the
    transaction failed: roll it back."""
    insert = await prepared.execute_sql(conn, executions.INSERT_STARTED)
    statements = [await prepared.execute_sql(conn, text) for text, _ in last]
    sql = "; ".join(["BEGIN", insert, *statements, "COMMIT"])
    await prepared.write(conn, sql, [Json(list(rows)), *(p for _, ps in last for p in ps)])


_WRITE_HELD = "SELECT noetl.write_held(%s, %s, %s, %s, %s, %s, %s, %s, %s)"


class Stale(Exception):
    """`commit_held`'s precondition failed: nothing was written."""


@dataclass(frozen=True)
class Reported:
    """A report `commit_held` records: its command, attempt and outcome status."""

    command_id: str
    attempt: int
    status: str


async def commit_held(
    conn: AsyncConnection[Any],
    execution_id: int,
    version: int,
    reported: Sequence[Reported],
    state: State,
    last: Sequence[tuple[str, list[Any]]],
) -> None:
    """A whole transaction in one round trip, for a decision made from the snapshot the
    server holds (`server.states`), as one simple query: BEGIN; `noetl.write_held` (migration
    0013), which writes the new snapshot only while the row is still RUNNING at `version` and
    each reported command's outcome status only while it is still claimed at that attempt;
    the rest of the writes (`statement`s, without the snapshot and without those commands);
    COMMIT. Raises `Stale` when the precondition fails and `psycopg.errors.UniqueViolation`
    on a conflict; either leaves the transaction failed: roll it back."""
    write = await prepared.execute_sql(conn, _WRITE_HELD)
    statements = [await prepared.execute_sql(conn, text) for text, _ in last]
    # PostgreSQL keeps generic plans here after five runs (the locked path has it plan each
    # statement for its parameters: `commands.begin_locked`): write_held's and the writes'
    # find every row by its key, so a plan made once does not grow with the execution, and
    # planning the writes anew cost 0.1-0.2 ms of PostgreSQL per report (benchmarks §8)
    sql = "; ".join(["BEGIN", write, *statements, "COMMIT"])
    params: list[Any] = [
        execution_id,
        version,
        [report.command_id for report in reported],
        [report.attempt for report in reported],
        [report.status for report in reported],
        Json(state.snapshot),
        state.status,
        Json(state.result),
        state.error,
    ]
    try:
        await prepared.write(conn, sql, [*params, *(p for _, ps in last for p in ps)])
    except psycopg.errors.SerializationFailure as exc:
        raise Stale(str(exc)) from None
