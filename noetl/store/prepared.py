"""Server-side prepared statements for the statements sent as simple queries.

The report transaction goes as one or two simple queries (`decisions.commit_held`, or
`commands.begin_locked` then `decisions.commit`): few round trips, but PostgreSQL would plan
every statement anew (the extended protocol's automatic preparation does not apply). So each
such statement is prepared once per connection (`PREPARE`, its own round trip, on first use)
and run as `EXECUTE name(...)` with its parameters written into the query's text (`run`).

A prepared statement outlives a rolled-back transaction, and a `PREPARE` that fails leaves
none behind, so what this module remembers per connection is exactly what the session holds.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import re
import weakref
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncClientCursor, AsyncConnection, errors, pq
from psycopg.pq.abc import Escaping, PGconn, PGresult
from psycopg.types.json import Json

from noetl import jsonfast

_PREPARED: weakref.WeakKeyDictionary[AsyncConnection[Any], set[str]] = weakref.WeakKeyDictionary()
_PLACEHOLDER = re.compile(r"%s")


async def execute_sql(conn: AsyncConnection[Any], sql: str) -> str:
    """`EXECUTE name(%s, ...)` for `sql` (its parameters as `%s`, no other `%`), prepared on
    `conn` first if it is not yet."""
    name, execute = _statement(sql)
    held = _PREPARED.setdefault(conn, set())
    if name not in held:
        numbered = iter(range(1, sql.count("%s") + 1))
        text = _PLACEHOLDER.sub(lambda _: f"${next(numbered)}", sql)
        await conn.execute(f"PREPARE {name} AS {text}".encode())
        held.add(name)
    return execute


@functools.lru_cache(maxsize=256)
def _statement(sql: str) -> tuple[str, str]:
    """The prepared statement's name for `sql` (a hash of the text: the same on every
    connection and server) and the `EXECUTE` that runs it."""
    name = "noetl_" + hashlib.blake2b(sql.encode(), digest_size=10).hexdigest()
    count = sql.count("%s")
    return name, f"EXECUTE {name}({', '.join(['%s'] * count)})" if count else f"EXECUTE {name}"


async def run(cursor: AsyncClientCursor[Any], sql: str, params: Sequence[Any]) -> None:
    """Run `sql` (statements separated by `;`, parameters as `%s`) as ONE simple query on the
    cursor, its parameters written in here (`bind`). The statements in it are prepared
    already (`execute_sql`); the server's pool leaves psycopg's own preparation off
    (`database.open_pool`), so the text, which differs on every call, is not hashed and
    counted by psycopg either."""
    await cursor.execute(bind(cursor.connection, sql, params))


async def write(conn: AsyncConnection[Any], sql: str, params: Sequence[Any]) -> None:
    """`run` for statements whose rows nobody reads (a report's writes and its COMMIT): the
    query goes to libpq directly and its results are only checked for an error, raised as
    psycopg raises it (`psycopg.errors`, with its `diag`). psycopg's cursor made a result
    object and its row machinery for each statement: ~20 us of the server per report. A
    query interrupted before its results came (a cancelled request) closes the connection:
    PostgreSQL rolls back what did not commit, and the pool replaces it."""
    query = bind(conn, sql, params)
    async with conn.lock:
        pgconn = conn.pgconn
        try:
            pgconn.send_query(query)
            failed = await _results(pgconn, asyncio.get_running_loop())
        except BaseException:
            await conn.close()
            raise
    if failed is not None:
        raise errors.error_from_result(failed, encoding=conn.info.encoding)


async def _results(pgconn: PGconn, loop: asyncio.AbstractEventLoop) -> PGresult | None:
    """Send what libpq holds, then read the query's results to the end; the first that
    failed, or None."""
    fd = pgconn.socket
    while pgconn.flush():  # a query larger than the socket's buffer
        await _ready(loop.add_writer, loop.remove_writer, fd)
    failed = None
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                return failed
            if failed is None and result.status == pq.ExecStatus.FATAL_ERROR:
                failed = result
        await _ready(loop.add_reader, loop.remove_reader, fd)


async def _ready(add: Any, remove: Any, fd: int) -> None:
    ready = asyncio.get_running_loop().create_future()
    add(fd, ready.set_result, None)
    try:
        await ready
    finally:
        remove(fd)


def bind(conn: AsyncConnection[Any], sql: str, params: Sequence[Any]) -> bytes:
    """`sql` (its parameters as `%s`, no other `%`) with each parameter written in as a SQL
    literal, for a query sent as ONE simple query (several statements, one round trip).

    psycopg's ClientCursor does the same through its generic adaptation (a dumper looked up
    per value, array element types guessed per element): a tenth of the server's time on a
    step of a sequential chain, for the few kinds of value these statements take. Strings
    and JSON documents are quoted by libpq (`PQescapeLiteral`), numbers written as digits;
    anything else is refused."""
    parts = sql.encode().split(b"%s")
    if len(parts) != len(params) + 1:
        raise ValueError(f"{len(parts) - 1} placeholders for {len(params)} parameters")
    escaping = pq.Escaping(conn.pgconn)
    encoding = conn.info.encoding
    out = [parts[0]]
    for value, part in zip(params, parts[1:], strict=True):
        out.append(_literal(escaping, encoding, value))
        out.append(part)
    return b"".join(out)


def _literal(escaping: Escaping, encoding: str, value: Any) -> bytes:
    if value is None:
        return b"NULL"
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int):  # a negative one in parentheses: `-1::int` is `-(1::int)`
        return b"%d" % value if value >= 0 else b"(%d)" % value
    if isinstance(value, float):
        text = repr(value).encode()
        if not math.isfinite(value):
            return b"'%s'::float8" % text
        return text if value >= 0 else b"(%s)" % text
    if isinstance(value, str):
        return bytes(escaping.escape_literal(value.encode(encoding)))
    if isinstance(value, Json):
        return bytes(escaping.escape_literal(jsonfast.dumps(value.obj))) + b"::json"
    if isinstance(value, list | tuple):
        if not value:
            return b"'{}'"
        items = b",".join(_literal(escaping, encoding, item) for item in value)
        return b"ARRAY[" + items + b"]"
    raise TypeError(f"no SQL literal for {type(value).__name__}")
