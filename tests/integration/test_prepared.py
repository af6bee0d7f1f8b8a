"""Statements sent as simple queries run prepared (noetl.store.prepared): PREPARE once per
connection, what is remembered matches what the session holds, through rollbacks too."""

from __future__ import annotations

from typing import Any

import psycopg

from noetl.config import Settings
from noetl.store import commands, database, prepared

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
