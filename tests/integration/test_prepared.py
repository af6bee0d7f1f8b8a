"""Statements sent as simple queries run prepared (noetl.store.prepared): PREPARE once per
connection, what is remembered matches what the session holds, through rollbacks too."""

from __future__ import annotations

from typing import Any

import psycopg

from noetl.config import Settings
from noetl.store import prepared

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
