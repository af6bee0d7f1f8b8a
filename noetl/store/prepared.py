"""Server-side prepared statements for the statements sent as simple queries.

The report transaction goes as two simple queries (`commands.begin_locked`,
`decisions.commit`): few round trips, but PostgreSQL would plan every statement anew (the
extended protocol's automatic preparation does not apply). So each such statement is
prepared once per connection (`PREPARE`, its own round trip, on first use) and run as
`EXECUTE name(...)` with its parameters bound by psycopg's ClientCursor.

A prepared statement outlives a rolled-back transaction, and a `PREPARE` that fails leaves
none behind, so what this module remembers per connection is exactly what the session holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import weakref
from collections.abc import Iterator
from typing import Any

from psycopg import AsyncConnection

_PREPARED: weakref.WeakKeyDictionary[AsyncConnection[Any], set[str]] = weakref.WeakKeyDictionary()
_PLACEHOLDER = re.compile(r"%s")


async def execute_sql(conn: AsyncConnection[Any], sql: str) -> str:
    """`EXECUTE name(%s, ...)` for `sql` (its parameters as `%s`, no other `%`), prepared on
    `conn` first if it is not yet."""
    name = "noetl_" + hashlib.blake2b(sql.encode(), digest_size=10).hexdigest()
    held = _PREPARED.setdefault(conn, set())
    count = sql.count("%s")
    if name not in held:
        numbered = iter(range(1, count + 1))
        text = _PLACEHOLDER.sub(lambda _: f"${next(numbered)}", sql)
        await conn.execute(f"PREPARE {name} AS {text}".encode())
        held.add(name)
    return f"EXECUTE {name}({', '.join(['%s'] * count)})" if count else f"EXECUTE {name}"


@contextlib.contextmanager
def literal(conn: AsyncConnection[Any]) -> Iterator[None]:
    """For a query whose parameters psycopg binds into its text (ClientCursor): psycopg's own
    automatic preparation left out. Such a text differs on every call, so psycopg would only
    hash it (kilobytes: the state snapshot is in it) and count it in its cache, to evict it
    unused; the statements in it are prepared here (`execute_sql`) already."""
    threshold = conn.prepare_threshold
    conn.prepare_threshold = None
    try:
        yield
    finally:
        conn.prepare_threshold = threshold
