"""Connection pool and versioned migrations."""

from __future__ import annotations

import logging
import re
from importlib import resources

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from noetl import jsonfast

log = logging.getLogger(__name__)

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x6E6F65746C  # "noetl": serialises concurrent migrators


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every packaged migration, in order."""
    found = []
    for entry in resources.files("noetl.store.migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match[1]), entry.name, entry.read_text()))
    return sorted(found)


async def migrate(conn: psycopg.AsyncConnection[object]) -> list[int]:
    """Apply the migrations not yet applied; safe to run from several servers at once.

    An up-to-date schema (every start but the first after an upgrade) costs one query: the
    applied versions, read without the lock."""
    if conn.autocommit and await _up_to_date(conn):
        return []
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute("CREATE SCHEMA IF NOT EXISTS noetl")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS noetl.schema_migration ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cursor = conn.cursor(row_factory=tuple_row)
        await cursor.execute("SELECT version FROM noetl.schema_migration")
        done = {row[0] for row in await cursor.fetchall()}
        for version, name, sql in migrations():
            if version in done:
                continue
            await conn.execute(sql.encode())
            await conn.execute(
                "INSERT INTO noetl.schema_migration (version, name) VALUES (%s, %s)",
                (version, name),
            )
            applied.append(version)
            log.info("applied migration %s", name)
    return applied


async def _up_to_date(conn: psycopg.AsyncConnection[object]) -> bool:
    cursor = conn.cursor(row_factory=tuple_row)
    try:
        await cursor.execute("SELECT version FROM noetl.schema_migration")
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return False  # a new database
    done = {row[0] for row in await cursor.fetchall()}
    return all(version in done for version in _versions())


def _versions() -> list[int]:
    """The packaged migrations' versions (names only: no SQL read)."""
    return [
        int(match[1])
        for entry in resources.files("noetl.store.migrations").iterdir()
        if (match := _MIGRATION.match(entry.name))
    ]


async def open_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> AsyncConnectionPool:
    set_json_dumps(jsonfast.dumps)
    set_json_loads(jsonfast.loads)
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        # psycopg's own automatic preparation stays off: on any ROLLBACK of a connection where
        # it prepared something it sends DEALLOCATE ALL, which also drops the statements
        # `store.prepared` prepared (the report transaction's); the next report on that
        # connection then failed with "prepared statement ... does not exist", again and
        # again, and its execution stalled. The hot statements are prepared by
        # `store.prepared`; the rest are planned per call.
        kwargs={"row_factory": dict_row, "autocommit": True, "prepare_threshold": None},
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=120)  # a busy or restarting database: wait
    except BaseException:  # given up, or stopped meanwhile: no connection attempts left
        await pool.close()
        raise
    return pool


async def init_database(url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await migrate(conn)
