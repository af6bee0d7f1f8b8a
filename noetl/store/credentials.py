"""`noetl.credential`: named secrets; `data` is ciphertext, never logged or returned raw."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

_META = "name, type, description, tags, created_at, updated_at"


async def upsert(
    conn: AsyncConnection[Any],
    name: str,
    kind: str,
    data: bytes,
    description: str,
    tags: Sequence[str],
) -> dict[str, Any]:
    cur = await conn.execute(
        "INSERT INTO noetl.credential (name, type, data, description, tags)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET type = EXCLUDED.type,"
        " data = EXCLUDED.data, description = EXCLUDED.description, tags = EXCLUDED.tags,"
        f" updated_at = now() RETURNING {_META}",
        (name, kind, data, description, Jsonb(list(tags))),
    )
    row: dict[str, Any] | None = await cur.fetchone()
    assert row is not None
    return row


async def get(conn: AsyncConnection[Any], name: str) -> dict[str, Any] | None:
    cur = await conn.execute(f"SELECT {_META}, data FROM noetl.credential WHERE name = %s", (name,))
    return await cur.fetchone()


async def list_all(conn: AsyncConnection[Any]) -> list[dict[str, Any]]:
    cur = await conn.execute(f"SELECT {_META} FROM noetl.credential ORDER BY name")
    return await cur.fetchall()


async def delete(conn: AsyncConnection[Any], name: str) -> bool:
    cur = await conn.execute("DELETE FROM noetl.credential WHERE name = %s", (name,))
    return cur.rowcount > 0
