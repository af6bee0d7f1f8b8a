"""Statements sent as simple queries run prepared (noetl.store.prepared): PREPARE once per
connection, what is remembered matches what the session holds, through rollbacks too."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg.types.json import Json

from noetl.config import Settings
from noetl.store import commands, database, decisions, prepared

LOCK = "SELECT %s::bigint + 1 AS n, %s::text AS t"


async def _names(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    cur = await conn.execute("SELECT name FROM pg_prepared_statements ORDER BY name")
    return [str(row[0]) for row in await cur.fetchall()]


async def test_a_statement_is_prepared_once_per_connection_and_survives_a_rollback(
    settings: Settings,
) -> None:
    url = str(settings.database_url)
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as one,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as two,
    ):
        first = await prepared.execute_sql(one, LOCK)
        assert first.startswith("EXECUTE noetl_") and first.endswith("(%s, %s)")
        assert await prepared.execute_sql(one, LOCK) == first  # no second PREPARE
        assert len(await _names(one)) == 1 and await _names(two) == []
        cur = psycopg.AsyncClientCursor(one)
        await cur.execute(f"BEGIN; {first}; ROLLBACK", (41, "x"))
        cur.nextset()
        assert await cur.fetchone() == (42, "x")
        await cur.execute(f"{first}", (1, "y"))  # still there after the rollback
        assert await cur.fetchone() == (2, "y")
        assert await prepared.execute_sql(two, LOCK) == first
        assert len(await _names(two)) == 1


async def test_the_report_transaction_plans_its_statements_for_their_parameters(
    settings: Settings,
) -> None:
    """Regression (issue 12): after five runs PostgreSQL kept a generic plan for the report
    transaction's prepared statements, and that plan's cost grew with the execution's rows (a
    20,000-item loop ran at half the items/s of a 2,000-item one, its transactions 9 → 19 ms)."""
    await database.init_database(str(settings.database_url))
    async with await psycopg.AsyncConnection.connect(
        str(settings.database_url), autocommit=True
    ) as conn:
        for _ in range(8):
            await commands.begin_locked(conn, 0, ["start:1"])
            await conn.execute("ROLLBACK")
        cur = await conn.execute(
            "SELECT coalesce(sum(generic_plans), 0), coalesce(sum(custom_plans), 0)"
            " FROM pg_prepared_statements WHERE name LIKE 'noetl_%'"
        )
        generic, custom = await cur.fetchone() or (None, None)
        assert (generic, custom) == (0, 16)


VALUES: list[tuple[str, Any]] = [
    ("text", "it's a \\ back'slash\nnew line, ü, 中文, 'quoted', {braces}, %s"),
    ("text", ""),
    ("bigint", 2**63 - 1),
    ("bigint", -(2**63)),
    ("int", 0),
    ("float8", 0.1),
    ("float8", -1.5e300),
    ("boolean", True),
    ("boolean", False),
    ("text", None),
    ("text[]", ["a", "b'c", 'd"e', "f,g", "{h}", "\\i", "NULL", ""]),
    ("text[]", []),
    ("int[]", [1, 2, 3]),
    ("bigint[]", [2**62, -1]),
]


async def test_bound_parameters_reach_postgresql_as_they_were(settings: Settings) -> None:
    """`prepared.run` writes the parameters into the query's text itself (not psycopg's
    adaptation): every kind of value the report transaction sends comes back unchanged."""
    json_doc = {"k": 'it\'s \\ "q" ü 中文 \u2028', "n": [1, 2.5, None, True], "e": {}}
    async with await psycopg.AsyncConnection.connect(
        str(settings.database_url), autocommit=True
    ) as conn:
        for sql_type, value in VALUES:
            cur = psycopg.AsyncClientCursor(conn)
            await prepared.run(cur, f"SELECT 1; SELECT %s::{sql_type}", [value])
            cur.nextset()
            assert await cur.fetchone() == (value,), (sql_type, value)
        cur = psycopg.AsyncClientCursor(conn)
        await prepared.run(cur, "SELECT %s::jsonb", [Json(json_doc)])
        assert await cur.fetchone() == (json_doc,)
        for special in ("inf", "-inf"):
            await prepared.run(cur, "SELECT %s::float8", [float(special)])
            assert await cur.fetchone() == (float(special),)
        await prepared.run(cur, "SELECT %s::float8 = 'NaN'::float8", [float("nan")])
        assert await cur.fetchone() == (True,)
        with pytest.raises(TypeError, match="no SQL literal for bytes"):
            await prepared.run(cur, "SELECT %s", [b"raw"])
        with pytest.raises(ValueError, match="2 placeholders for 1 parameters"):
            await prepared.run(cur, "SELECT %s, %s", [1])
        assert conn.prepare_threshold == 5  # left as it was


def _removed(plan: dict[str, Any]) -> int:
    """Rows any node of an EXPLAIN ANALYZE plan read and dropped by a filter."""
    own = int(plan.get("Rows Removed by Filter", 0))
    return own + sum(_removed(child) for child in plan.get("Plans", []))


async def test_settling_commands_finds_each_by_its_key_under_a_plan_made_when_small(
    settings: Settings,
) -> None:
    """Regression (issue 12): the settle statement's generic plan, made while the table held
    a few commands, searched the index by the execution alone and filtered every command it
    had (a 20,000-item loop's report read ~20,000 rows; PostgreSQL's CPU per item grew with
    the loop). Joined with the ids, each command is one index lookup."""
    await database.init_database(str(settings.database_url))
    async with await psycopg.AsyncConnection.connect(
        str(settings.database_url), autocommit=True
    ) as conn:
        await conn.execute(
            "INSERT INTO noetl.catalog (catalog_id, path, version, name, content, content_hash)"
            " VALUES (1, 'p', 1, 'p', 'x', 'x')"
        )
        await conn.execute(
            "INSERT INTO noetl.execution (execution_id, catalog_id, path, version, status, state)"
            " VALUES (7, 1, 'p', 1, 'RUNNING', '{}')"
        )
        add = (
            "INSERT INTO noetl.command (event_id, execution_id, command_id, step, tool, input,"
            " status, attempt) SELECT i, 7, 'start:1[' || i || ']', 'start', '{}', '{}',"
            " 'CLAIMED', 1 FROM generate_series(%s::int, %s::int) AS i"
        )
        await conn.execute(add, (1, 5))
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        settle = await prepared.execute_sql(conn, decisions._SETTLE)
        cursor = psycopg.AsyncClientCursor(conn)
        await prepared.run(cursor, settle, ["COMPLETED", ["start:1[1]"], 7])  # planned now
        await conn.execute(add, (6, 2000))
        await prepared.run(
            cursor, f"EXPLAIN (ANALYZE, FORMAT JSON) {settle}", ["COMPLETED", ["start:1[1999]"], 7]
        )
        [(explained,)] = await cursor.fetchall()
        plan = explained[0]["Plan"]
        assert _removed(plan) == 0, plan


async def test_a_rollback_leaves_the_prepared_statements_of_a_pool_connection(
    settings: Settings,
) -> None:
    """Regression (issue 12): psycopg's automatic preparation, on a ROLLBACK of a connection
    where it had prepared something, sent DEALLOCATE ALL, dropping the report transaction's
    statements too; every later report on that connection failed ("prepared statement ...
    does not exist") and its execution stalled. The server's pool leaves it off."""
    await database.init_database(str(settings.database_url))
    pool = await database.open_pool(str(settings.database_url), min_size=1, max_size=1)
    try:
        async with pool.connection() as conn:
            for _ in range(8):  # what psycopg would prepare after five runs
                await conn.execute("SELECT count(*) FROM noetl.execution WHERE status = %s", ["x"])
            lock = await prepared.execute_sql(conn, LOCK)
            await conn.execute("BEGIN")
            await conn.execute("ROLLBACK")  # as flow._rolled_back_on_error does
            cur = psycopg.AsyncClientCursor(conn)
            await prepared.run(cur, lock, [1, "y"])
            row: Any = await cur.fetchone()  # the pool's connections make dicts
            assert row == {"n": 2, "t": "y"}
    finally:
        await pool.close()


async def test_write_raises_psycopgs_error_and_a_cancelled_write_closes_its_connection(
    settings: Settings,
) -> None:
    """`prepared.write` (libpq directly): a failing statement raises psycopg's error class
    with its diagnostics, after every result of the query was read (the connection is usable
    at once); a write cancelled before its results came closes the connection, so nobody
    reuses it mid-query; rows written before the failure are rolled back by the caller."""
    import asyncio

    url = str(settings.database_url)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("CREATE TEMP TABLE w (k int PRIMARY KEY)")
        await prepared.write(conn, "BEGIN; INSERT INTO w VALUES (%s); COMMIT", [1])
        with pytest.raises(psycopg.errors.UniqueViolation) as caught:
            await prepared.write(
                conn, "BEGIN; INSERT INTO w VALUES (%s); INSERT INTO w VALUES (%s); COMMIT", [2, 1]
            )
        assert caught.value.diag.constraint_name == "w_pkey"
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        await conn.execute("ROLLBACK")
        cur = await conn.execute("SELECT array_agg(k ORDER BY k) FROM w")
        assert await cur.fetchone() == ([1],)  # 2 went with the failed transaction
        with pytest.raises(psycopg.errors.DataError):
            await prepared.write(conn, "SELECT %s::int", ["not a number"])
        big = "x" * 2_000_000  # larger than a socket buffer: sent in parts
        await prepared.write(conn, "SELECT length(%s)", [big])

        sleeping = asyncio.ensure_future(prepared.write(conn, "SELECT pg_sleep(%s)", [3]))
        await asyncio.sleep(0.2)
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
        assert conn.closed
