"""A report decided from the held snapshot writes the snapshot and its commands' outcomes as
compare-and-set (`noetl.write_held`, migration 0013), each row by its key; the event table
has no index nobody reads (migration 0014). Both apply to a database made by the migrations
before them."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from noetl.config import Settings
from noetl.protocol.events import EventType
from noetl.protocol.records import EventRecord
from noetl.store import database, decisions

EXECUTION = 7


async def _execution(conn: psycopg.AsyncConnection[Any], commands: int) -> None:
    """A RUNNING execution at state version 0 with `commands` claimed commands (attempt 1)."""
    await conn.execute(
        "INSERT INTO noetl.catalog (catalog_id, path, version, name, content, content_hash)"
        " VALUES (1, 'p', 1, 'p', 'x', 'x')"
    )
    await conn.execute(
        "INSERT INTO noetl.execution (execution_id, catalog_id, path, version, status, state)"
        " VALUES (%s, 1, 'p', 1, 'RUNNING', '{}')",
        (EXECUTION,),
    )
    await _commands(conn, 1, commands)


async def _commands(conn: psycopg.AsyncConnection[Any], first: int, last: int) -> None:
    await conn.execute(
        "INSERT INTO noetl.command (event_id, execution_id, command_id, step, tool, input,"
        " status, attempt) SELECT i, %s, 'start:1[' || i || ']', 'start', '{}', '{}',"
        " 'CLAIMED', 1 FROM generate_series(%s::int, %s::int) AS i",
        (EXECUTION, first, last),
    )


async def _report(
    conn: psycopg.AsyncConnection[Any], version: int, item: int, attempt: int = 1
) -> None:
    """What the held path commits for the outcome of item `item`: its event, the command's
    status, the new snapshot."""
    command_id = f"start:1[{item}]"
    event = EventRecord(
        EXECUTION,
        10_000 + 10 * version + item,
        EventType.COMMAND_COMPLETED,
        step="start",
        command_id=command_id,
        attempt=attempt,
        worker_id="w",
        status="COMPLETED",
        result=item,
    )
    writes = decisions.statement(EXECUTION, events=[event])
    assert writes is not None
    await decisions.commit_held(
        conn,
        EXECUTION,
        version,
        [decisions.Reported(command_id, attempt, "COMPLETED")],
        decisions.State({"version": version + 1}, "RUNNING", None, None),
        [writes],
    )


async def _command_rows_read(conn: psycopg.AsyncConnection[Any]) -> int:
    """Rows of noetl.command this database's backends fetched, as far as they have reported:
    `conn`'s own statements so far are included (it flushes its counts first)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    cur = await conn.execute(
        "SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)"
        " FROM pg_stat_user_tables WHERE relid = 'noetl.command'::regclass"
    )
    (read,) = await cur.fetchone() or (0,)
    return int(read)


async def test_a_held_report_reads_its_commands_by_key_however_many_the_execution_has(
    settings: Settings,
) -> None:
    """Regression (issue 12): the held path's writes settled the reported commands in the
    transaction's statement (`UPDATE ... FROM unnest(ids)`), under a generic plan that joined
    the ids with every command of the execution (a hash join over an index search by the
    execution): a 20,000-item loop's reports read ~10,000 command rows each, and PostgreSQL's
    CPU per item grew from 0.32 to 0.63 ms within the run. Planned while the execution had 5
    commands, a report of one of 2,000 now reads that one."""
    await database.init_database(str(settings.database_url))
    async with await psycopg.AsyncConnection.connect(
        str(settings.database_url), autocommit=True
    ) as conn:
        await _execution(conn, 5)
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await _report(conn, 0, 1)  # the plans are made now, on 5 commands
        await _commands(conn, 6, 2000)
        await conn.execute("ANALYZE noetl.command")  # what autovacuum does as the table grows
        await _report(conn, 1, 2)  # planned again after ANALYZE, on 2,000
        await _commands(conn, 2001, 4000)
        before = await _command_rows_read(conn)
        await _report(conn, 2, 3999)
        read = await _command_rows_read(conn) - before
        cur = await conn.execute(
            "SELECT command_id, status, lease_until FROM noetl.command"
            " WHERE execution_id = %s AND status <> 'CLAIMED' ORDER BY command_id",
            (EXECUTION,),
        )
        settled = await cur.fetchall()
        cur = await conn.execute(
            "SELECT state_version, state::text FROM noetl.execution WHERE execution_id = %s",
            (EXECUTION,),
        )
        row = await cur.fetchone()
    assert settled == [(f"start:1[{i}]", "COMPLETED", None) for i in ("1", "2", "3999")]
    assert row == (3, '{"version":3}')
    assert read <= 2, f"{read} command rows read to settle one"


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE noetl.execution SET state_version = 1",  # another process wrote the state
        "UPDATE noetl.execution SET status = 'CANCELLED'",
        "UPDATE noetl.command SET status = 'PENDING' WHERE command_id = 'start:1[2]'",
        # the row knows no attempt 1 (an earlier attempt's late report is accepted: flow._check)
        "UPDATE noetl.command SET attempt = 0 WHERE command_id = 'start:1[2]'",
        "DELETE FROM noetl.command WHERE command_id = 'start:1[2]'",
    ],
    ids=["version", "ended", "released", "unknown-attempt", "missing"],
)
async def test_a_held_report_writes_nothing_unless_its_snapshot_and_commands_are_current(
    settings: Settings, change: str
) -> None:
    await database.init_database(str(settings.database_url))
    async with await psycopg.AsyncConnection.connect(
        str(settings.database_url), autocommit=True
    ) as conn:
        await _execution(conn, 3)
        await conn.execute(change)
        cur = await conn.execute("SELECT * FROM noetl.command ORDER BY event_id")
        commands = await cur.fetchall()
        cur = await conn.execute("SELECT * FROM noetl.execution")
        execution = await cur.fetchone()
        with pytest.raises(decisions.Stale):  # reported: items 1 and 2, in that order
            await decisions.commit_held(
                conn,
                EXECUTION,
                0,
                [
                    decisions.Reported("start:1[2]", 1, "COMPLETED"),
                    decisions.Reported("start:1[1]", 1, "FAILED"),
                ],
                decisions.State({"version": 1}, "RUNNING", None, None),
                [],
            )
        await conn.execute("ROLLBACK")
        cur = await conn.execute("SELECT * FROM noetl.command ORDER BY event_id")
        assert await cur.fetchall() == commands
        cur = await conn.execute("SELECT * FROM noetl.execution")
        assert await cur.fetchone() == execution


async def test_the_held_writes_and_the_event_index_migrate_an_existing_database(
    settings: Settings,
) -> None:
    """A database made by the migrations up to 0012 (with an execution in it) takes 0013 and
    0014: the function is there, the unused event index is gone, the rows are kept."""
    url = str(settings.database_url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("CREATE SCHEMA noetl")
        await conn.execute(
            "CREATE TABLE noetl.schema_migration (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version, name, sql in database.migrations():
            if version <= 12:
                await conn.execute(sql.encode())
                await conn.execute(
                    "INSERT INTO noetl.schema_migration (version, name) VALUES (%s, %s)",
                    (version, name),
                )
        await _execution(conn, 2)
        indexes = "SELECT indexname FROM pg_indexes WHERE schemaname = 'noetl' ORDER BY 1"
        before = [row[0] for row in await (await conn.execute(indexes)).fetchall()]
        assert "event_type_created_idx" in before
        assert await database.migrate(conn) == [
            version for version, _, _ in database.migrations() if version > 12
        ]
        after = [row[0] for row in await (await conn.execute(indexes)).fetchall()]
        await _report(conn, 0, 2)
        cur = await conn.execute("SELECT command_id, status FROM noetl.command ORDER BY command_id")
        commands = await cur.fetchall()
    assert after == [name for name in before if name != "event_type_created_idx"]
    assert commands == [("start:1[1]", "CLAIMED"), ("start:1[2]", "COMPLETED")]
