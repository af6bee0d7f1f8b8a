"""`noetl.catalog`: registered playbooks, versioned by path."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

_COLUMNS = "catalog_id, path, version, name, content_hash, created_at"


async def register(
    conn: AsyncConnection[Any], catalog_id: int, path: str, name: str, content: str, digest: str
) -> dict[str, Any]:
    """Store a new version of `path`; identical content returns the latest version unchanged."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (path,))
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM noetl.catalog WHERE path = %s ORDER BY version DESC LIMIT 1",
            (path,),
        )
        latest = await cur.fetchone()
        if latest and latest["content_hash"] == digest:
            return {**latest, "created": False}
        version = latest["version"] + 1 if latest else 1
        cur = await conn.execute(
            "INSERT INTO noetl.catalog (catalog_id, path, version, name, content, content_hash)"
            f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (catalog_id, path, version, name, content, digest),
        )
        row = await cur.fetchone()
        assert row is not None
        return {**row, "created": True}


async def get_entry(
    conn: AsyncConnection[Any],
    *,
    catalog_id: int | None = None,
    path: str | None = None,
    version: int | None = None,
    content: bool = True,
) -> dict[str, Any] | None:
    """An entry by id, or by path (its newest version unless `version`); `content=False`
    leaves out the playbook's text (starting an execution needs only which entry it is: its
    parsed form is cached by id)."""
    columns = f"{_COLUMNS}, content" if content else _COLUMNS
    if catalog_id is not None:
        cur = await conn.execute(
            f"SELECT {columns} FROM noetl.catalog WHERE catalog_id = %s", (catalog_id,)
        )
    else:
        cur = await conn.execute(
            f"SELECT {columns} FROM noetl.catalog WHERE path = %s"
            " AND (%s::int IS NULL OR version = %s) ORDER BY version DESC LIMIT 1",
            (path, version, version),
        )
    return await cur.fetchone()


async def list_entries(conn: AsyncConnection[Any], limit: int = 500) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT DISTINCT ON (path) {_COLUMNS} FROM noetl.catalog"
        " ORDER BY path, version DESC LIMIT %s",
        (limit,),
    )
    return await cur.fetchall()


async def list_versions(conn: AsyncConnection[Any], path: str) -> list[dict[str, Any]]:
    """Every version of `path`, newest first."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM noetl.catalog WHERE path = %s ORDER BY version DESC", (path,)
    )
    return await cur.fetchall()
