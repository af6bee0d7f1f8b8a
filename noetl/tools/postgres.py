"""The ``postgres`` tool: run SQL on PostgreSQL through pooled async psycopg connections.

Connection: from ``auth`` (the resolved credential) when it has connection keys, else from the
tool's own fields: ``dsn`` (alias ``url``) and/or ``host`` (a name, an address or a unix socket
directory), ``port``, ``user`` (alias ``username``), ``password``, ``database`` (alias
``dbname``), ``sslmode``; ``credential`` is upstream's spelling of ``auth``. One pool per
distinct target, kept for the life of the process. A legacy ``pool`` field is accepted and
ignored.

SQL: ``query`` (alias ``command``; ``commands`` a list of statements; or upstream's
``script: {uri, source}`` block). Without ``params`` the text is sent as one simple query,
so several ``;``-separated statements run in order; with ``params`` (a list for ``%s``, a
mapping for ``%(name)s``) it is one statement and the values are bound by psycopg. Everything
runs in one transaction that is rolled back on error, under ``SET LOCAL statement_timeout``
from ``timeout_seconds`` (default 300). Result: see ``noetl.tools.sql``; the rows are those of
the last statement that returned rows, else ``affected_rows`` sums the statements' row counts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from noetl.tools.base import ToolCall, ToolError
from noetl.tools.sql import (
    affected_result,
    rows_result,
    sql_params,
    sql_source,
    statement_count,
    statement_rows,
    with_statements,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0
CONNECT_TIMEOUT = 10
"""Seconds libpq may take to connect (unless the target sets ``connect_timeout``)."""
CHECKOUT_TIMEOUT = 30.0
"""Seconds a call waits for a pooled connection."""
MAX_POOL_SIZE = 10

_CONNECTION_KEYS = (
    "dsn",
    "url",
    "host",
    "port",
    "user",
    "username",
    "password",
    "database",
    "dbname",
    "sslmode",
)
_FIELDS = {
    "host": ("host",),
    "port": ("port",),
    "user": ("user", "username"),
    "password": ("password",),
    "dbname": ("database", "dbname"),
    "sslmode": ("sslmode",),
}
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03"}
_RETRYABLE_CLASSES = ("08", "53")
_PERMANENT_CONNECT_ERRORS = ("authentication failed", "does not exist", "no pg_hba.conf entry")
_URL_PASSWORD = re.compile(r"://[^/@:]*:([^@/]*)@")
_KEYWORD_PASSWORD = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_pool_names = itertools.count(1)


class PostgresTool:
    """Runs SQL with pooled connections; see the module docstring."""

    kind = "postgres"
    default_timeout = DEFAULT_TIMEOUT

    def __init__(self, *, max_pool_size: int = MAX_POOL_SIZE) -> None:
        self._max_pool_size = max_pool_size
        self._pools: dict[str, AsyncConnectionPool] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pools(self) -> tuple[AsyncConnectionPool, ...]:
        """The open pools, one per connection target."""
        return tuple(self._pools.values())

    async def run(self, call: ToolCall) -> Any:
        target = connection_target(call.auth, call.config)
        query = await sql_source(call.config, self.kind)
        params = sql_params(call.config)
        timeout = call.time_limit(DEFAULT_TIMEOUT)
        pool = await self._pool(target)
        try:
            async with pool.connection(timeout=CHECKOUT_TIMEOUT) as conn, conn.cursor() as cur:
                await cur.execute(
                    "SELECT set_config('statement_timeout', %s, true)",
                    [f"{max(int(timeout * 1000), 1)}ms"],
                )
                await cur.execute(query, params)
                return await _collect(cur)
        except PoolTimeout:
            raise ToolError(
                f"no postgres connection available within {CHECKOUT_TIMEOUT:g} s",
                retryable=True,
            ) from None
        except psycopg.Error as exc:
            raise _tool_error(exc, target) from None

    async def close(self) -> None:
        """Close every pool (on this event loop); later calls open new ones."""
        pools = list(self._pools.values()) if self._loop is _running_loop() else []
        self._pools.clear()
        self._opening.clear()
        for pool in pools:
            await pool.close()

    async def _pool(self, target: Target) -> AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # pools belong to the loop that opened them
            if self._pools:
                logger.debug("event loop changed: dropping %d postgres pools", len(self._pools))
            self._pools.clear()
            self._opening.clear()
            self._loop = loop
        pool = self._pools.get(target.conninfo)
        if pool is not None:
            return pool
        async with self._opening.setdefault(target.conninfo, asyncio.Lock()):
            pool = self._pools.get(target.conninfo)
            if pool is None:
                pool = await self._open(target)
                self._pools[target.conninfo] = pool
            return pool

    async def _open(self, target: Target) -> AsyncConnectionPool:
        try:  # connect once first: a pool only reports "timed out" when it cannot connect
            probe = await psycopg.AsyncConnection.connect(target.conninfo)
        except psycopg.Error as exc:
            raise _tool_error(exc, target) from None
        await probe.close()
        name = f"noetl-postgres-{next(_pool_names)}"
        pool: AsyncConnectionPool = AsyncConnectionPool(
            target.conninfo,
            min_size=0,
            max_size=self._max_pool_size,
            open=False,
            check=AsyncConnectionPool.check_connection,
            name=name,
        )
        await pool.open()
        logger.info("opened postgres pool %s for %s", name, target.label)
        return pool


class Target:
    """A connection target: a libpq conninfo string and the secrets to keep out of messages."""

    def __init__(self, conninfo: str, secrets: tuple[str, ...]) -> None:
        self.conninfo = conninfo
        self.secrets = secrets
        try:
            parts = conninfo_to_dict(conninfo)
        except psycopg.Error:
            parts = {}
        host = parts.get("host") or "localhost"
        port = f":{parts['port']}" if parts.get("port") else ""
        self.label = f"{host}{port}/{parts.get('dbname') or parts.get('user') or ''}"

    def redact(self, text: str) -> str:
        return _redact(text, self.secrets)


def connection_target(auth: Mapping[str, Any] | None, config: Mapping[str, Any]) -> Target:
    """The target from ``auth`` if it has connection keys, else from the tool's fields."""
    if auth and any(auth.get(key) not in (None, "") for key in _CONNECTION_KEYS):
        source: Mapping[str, Any] = auth
    elif any(config.get(key) not in (None, "") for key in _CONNECTION_KEYS):
        source = config
    else:
        raise ToolError("postgres tool needs `auth` (a credential name) or connection fields")
    dsn = source.get("dsn") or source.get("url") or ""
    if not isinstance(dsn, str):
        raise ToolError("postgres `dsn` must be a string")
    fields: dict[str, str] = {}
    for field, names in _FIELDS.items():
        value = next((source[n] for n in names if source.get(n) not in (None, "")), None)
        if value is not None:
            fields[field] = str(value)
    secrets = _secrets(dsn, fields.get("password"))
    try:
        parts = {"connect_timeout": CONNECT_TIMEOUT, "application_name": "noetl"}
        parts.update(conninfo_to_dict(make_conninfo(dsn, **fields)))
        # one spelling per target (URL or fields, any order), so equal targets share a pool
        conninfo = make_conninfo("", **{key: str(parts[key]) for key in sorted(parts)})
    except psycopg.Error as exc:
        message = _redact(str(exc), secrets)
        raise ToolError(f"invalid postgres connection settings: {message}") from None
    return Target(conninfo, _secrets(dsn, fields.get("password"), parts.get("password")))


def _secrets(dsn: str, *passwords: Any) -> tuple[str, ...]:
    """Every spelling of the password, longest first (so a longer one is masked whole)."""
    found = {str(password) for password in passwords if password}
    for pattern in (_URL_PASSWORD, _KEYWORD_PASSWORD):
        for match in pattern.finditer(dsn):
            found.add(match.group(1))
            found.add(match.group(1).strip("'"))
    return tuple(sorted((secret for secret in found if secret), key=len, reverse=True))


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


async def _collect(cur: psycopg.AsyncCursor[Any]) -> dict[str, Any]:
    """Rows of the last result that has rows; else the sum of the row counts."""
    columns: list[str] | None = None
    rows: list[Any] = []
    affected = 0
    statements: list[dict[str, Any]] = []
    while True:
        if cur.description is not None:
            columns = [column.name for column in cur.description]
            rows = await cur.fetchall()
            statements.append(statement_rows(columns, rows))
        else:
            affected += max(cur.rowcount, 0)
            statements.append(statement_count(cur.rowcount))
        if not cur.nextset():
            break
    final = rows_result(columns, rows) if columns is not None else affected_result(affected)
    return with_statements(final, statements)


def _tool_error(exc: psycopg.Error, target: Target) -> ToolError:
    sqlstate = exc.sqlstate
    message = target.redact(str(exc).strip()) or type(exc).__name__
    if sqlstate is None and isinstance(exc, psycopg.OperationalError):
        # connection failed or lost: transient unless the server turned us away for good
        retryable = not any(reason in message for reason in _PERMANENT_CONNECT_ERRORS)
    else:
        retryable = sqlstate is not None and (
            sqlstate in _RETRYABLE_SQLSTATES or sqlstate.startswith(_RETRYABLE_CLASSES)
        )
    details: dict[str, Any] = {"sqlstate": sqlstate, "error_type": type(exc).__name__}
    diag = exc.diag
    extra = {
        "detail": diag.message_detail,
        "hint": diag.message_hint,
        "position": diag.statement_position,
    }
    details.update({key: target.redact(value) for key, value in extra.items() if value})
    logger.debug("postgres error on %s: sqlstate %s", target.label, sqlstate)
    return ToolError(message, retryable=retryable, details=details)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
