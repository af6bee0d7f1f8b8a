"""The ``transfer`` tool: copy rows from a source to a target in one step.

    kind: transfer
    source: {type: http | postgres | duckdb, ...}
    target: {type: postgres | duckdb | http, table, mapping: {column: source_field}, ...}
    mode: append | replace        # replace empties the target table first (same transaction)
    chunk_size: 1000              # rows per INSERT batch / per http POST

Sources: ``http`` (``url``, ``method``, ``headers``, ``params``; the JSON answer is the list of
rows, or the list under ``data_path`` (dotted), or the first list among data/items/results/rows),
``postgres`` (``query``, ``auth`` or connection fields), ``duckdb`` (``query``, ``db_path``).
Targets: ``postgres`` and ``duckdb`` (``table``; ``mapping`` picks and renames fields, else
every field of the first row is a column; lists and mappings are written as JSON) and ``http``
(POSTs each chunk as a JSON array to ``url``). Other types (snowflake, bigquery, gcs, ...)
fail naming the service they need. ``auth`` of each side is a credential name, resolved by the
worker like a tool's ``auth`` (``ToolCall.auth`` is ``{source, target}``).

Result: ``{status, source, target, table, rows_read, rows_written}``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from noetl.dsl.tool_schema import UNAVAILABLE
from noetl.tools.base import ToolCall, ToolError
from noetl.tools.postgres import connection_target
from noetl.tools.sql import json_value

DEFAULT_TIMEOUT = 600.0
DEFAULT_CHUNK = 1000
_TABLE = re.compile(r"^[A-Za-z_][\w$]*(\.[A-Za-z_][\w$]*)?$")
_LIST_KEYS = ("data", "items", "results", "rows", "records")
Row = dict[str, Any]


class TransferTool:
    kind = "transfer"
    default_timeout = DEFAULT_TIMEOUT

    async def run(self, call: ToolCall) -> Any:
        config = call.config
        source, target = _side(config, "source"), _side(config, "target")
        auth = call.auth or {}
        timeout = call.time_limit(DEFAULT_TIMEOUT)
        chunk = _chunk_size(config.get("chunk_size"))
        mode = str(config.get("mode") or "append")
        if mode not in {"append", "replace"}:
            raise ToolError(f"transfer mode must be append or replace, got {mode!r}")
        for side, end in (("source", source), ("target", target)):
            kind = str(end.get("type") or "")
            if kind in UNAVAILABLE:
                raise ToolError(
                    f"transfer {side} type {kind!r} needs {UNAVAILABLE[kind]}, which is not"
                    " available in this installation"
                )
        try:
            async with asyncio.timeout(timeout):
                rows = await _read(source, auth.get("source"))
                rows = _mapped(rows, target.get("mapping"))
                written = await _write(target, auth.get("target"), rows, mode, chunk)
        except TimeoutError:
            raise ToolError(f"transfer timed out after {timeout:g} s", retryable=True) from None
        return {
            "status": "success",
            "source": source.get("type"),
            "target": target.get("type"),
            "table": target.get("table"),
            "rows_read": len(rows),
            "rows_written": written,
        }


def _side(config: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    end = config.get(name)
    if not isinstance(end, Mapping) or not end.get("type"):
        raise ToolError(f"transfer needs `{name}`: a mapping with `type`")
    return end


def _chunk_size(raw: Any) -> int:
    if raw is None:
        return DEFAULT_CHUNK
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise ToolError(f"chunk_size must be a positive integer, got {raw!r}")
    return value


# -- sources ------------------------------------------------------------------------------


async def _read(source: Mapping[str, Any], auth: Mapping[str, Any] | None) -> list[Row]:
    kind = source["type"]
    if kind == "http":
        return await _read_http(source, auth)
    if kind == "postgres":
        return await _read_postgres(source, auth)
    if kind == "duckdb":
        return await asyncio.to_thread(_read_duckdb, source)
    raise ToolError(f"transfer source type {kind!r} is not supported (http, postgres, duckdb)")


async def _read_http(source: Mapping[str, Any], auth: Mapping[str, Any] | None) -> list[Row]:
    url = source.get("url") or source.get("endpoint")
    if not isinstance(url, str) or not url:
        raise ToolError("transfer source http needs `url`")
    headers = {str(k): str(v) for k, v in (source.get("headers") or {}).items()}
    if auth and auth.get("token"):
        headers["Authorization"] = f"Bearer {auth['token']}"
    method = str(source.get("method") or "GET").upper()
    shown = url.split("?", 1)[0]
    try:
        async with httpx.AsyncClient(timeout=60.0, follow_redirects=True) as client:
            response = await client.request(
                method, url, headers=headers, params=source.get("params"), json=source.get("json")
            )
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise ToolError(
            f"transfer source {method} {shown} failed: {reason}", retryable=True
        ) from None
    if not response.is_success:
        raise ToolError(
            f"transfer source {method} {shown} returned HTTP {response.status_code}",
            retryable=response.status_code >= 500 or response.status_code == 429,
        )
    try:
        body = response.json()
    except ValueError:
        raise ToolError(f"transfer source {shown} did not answer JSON") from None
    return _rows_of(body, source.get("data_path"))


def _rows_of(body: Any, path: Any) -> list[Row]:
    if isinstance(path, str) and path:
        for part in path.split("."):
            body = body.get(part) if isinstance(body, Mapping) else None
    elif isinstance(body, Mapping):
        body = next((body[k] for k in _LIST_KEYS if isinstance(body.get(k), list)), [body])
    if not isinstance(body, list):
        raise ToolError("transfer source answer holds no list of rows (set `data_path`)")
    return [dict(row) if isinstance(row, Mapping) else {"value": row} for row in body]


async def _read_postgres(source: Mapping[str, Any], auth: Mapping[str, Any] | None) -> list[Row]:
    query = source.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolError("transfer source postgres needs `query`")
    target = connection_target(auth, source)
    try:
        async with await psycopg.AsyncConnection.connect(target.conninfo) as conn:
            cur = await conn.execute(query)
            if cur.description is None:
                return []
            names = [column.name for column in cur.description]
            return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]
    except psycopg.Error as exc:
        raise ToolError(f"transfer source postgres: {target.redact(str(exc).strip())}") from None


def _read_duckdb(source: Mapping[str, Any]) -> list[Row]:
    import duckdb

    query = source.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolError("transfer source duckdb needs `query`")
    try:
        with duckdb.connect(str(source.get("db_path") or ":memory:")) as conn:
            cursor = conn.execute(query)
            names = [str(column[0]) for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    except duckdb.Error as exc:
        raise ToolError(f"transfer source duckdb: {exc}") from None


def _mapped(rows: list[Row], mapping: Any) -> list[Row]:
    """`mapping` {column: source_field} picks and renames; a dotted field reads nested data."""
    if mapping is None:
        return rows
    if not isinstance(mapping, Mapping) or not mapping:
        raise ToolError("transfer target mapping must be a mapping of column: source field")
    return [{str(col): _field(row, str(field)) for col, field in mapping.items()} for row in rows]


def _field(row: Mapping[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


# -- targets ------------------------------------------------------------------------------


def _columns(rows: Sequence[Row]) -> list[str]:
    return list(rows[0]) if rows else []


def _table(target: Mapping[str, Any]) -> str:
    table = target.get("table")
    if not isinstance(table, str) or not _TABLE.match(table):
        raise ToolError(f"transfer target needs `table` (schema.name), got {table!r}")
    return table


async def _write(
    target: Mapping[str, Any],
    auth: Mapping[str, Any] | None,
    rows: list[Row],
    mode: str,
    chunk: int,
) -> int:
    kind = target["type"]
    if kind == "postgres":
        return await _write_postgres(target, auth, rows, mode, chunk)
    if kind == "duckdb":
        return await asyncio.to_thread(_write_duckdb, target, rows, mode, chunk)
    if kind == "http":
        return await _write_http(target, auth, rows, chunk)
    raise ToolError(f"transfer target type {kind!r} is not supported (postgres, duckdb, http)")


def _pg_value(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, Mapping | list) else value


async def _write_postgres(
    target: Mapping[str, Any],
    auth: Mapping[str, Any] | None,
    rows: list[Row],
    mode: str,
    chunk: int,
) -> int:
    table = sql.Identifier(*_table(target).split("."))
    columns = _columns(rows)
    conn_target = connection_target(auth, target)
    try:
        async with (
            await psycopg.AsyncConnection.connect(conn_target.conninfo) as conn,
            conn.transaction(),
            conn.cursor() as cur,
        ):
            # one transaction: a failed chunk leaves the table as it was
            if mode == "replace":
                await cur.execute(sql.SQL("DELETE FROM {}").format(table))
            if not rows:
                return 0
            insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                table,
                sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                sql.SQL(", ").join(sql.Placeholder() for _ in columns),
            )
            for start in range(0, len(rows), chunk):
                batch = rows[start : start + chunk]
                await cur.executemany(
                    insert, [[_pg_value(row.get(c)) for c in columns] for row in batch]
                )
    except psycopg.Error as exc:
        message = conn_target.redact(str(exc).strip())
        raise ToolError(f"transfer target postgres {_table(target)}: {message}") from None
    return len(rows)


def _write_duckdb(target: Mapping[str, Any], rows: list[Row], mode: str, chunk: int) -> int:
    import duckdb

    table = _table(target)
    columns = _columns(rows)
    path = str(target.get("db_path") or ":memory:")
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    quoted = ".".join(f'"{part}"' for part in table.split("."))
    try:
        with duckdb.connect(path) as conn:
            conn.execute("BEGIN TRANSACTION")
            if mode == "replace":
                conn.execute(f"DELETE FROM {quoted}")
            if rows:
                names = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join("?" for _ in columns)
                insert = f"INSERT INTO {quoted} ({names}) VALUES ({marks})"
                for start in range(0, len(rows), chunk):
                    conn.executemany(
                        insert,
                        [
                            [_duck_value(row.get(c)) for c in columns]
                            for row in rows[start : start + chunk]
                        ],
                    )
            conn.execute("COMMIT")
    except duckdb.Error as exc:
        raise ToolError(f"transfer target duckdb {table}: {exc}") from None
    return len(rows)


def _duck_value(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, Mapping | list) else value


async def _write_http(
    target: Mapping[str, Any], auth: Mapping[str, Any] | None, rows: list[Row], chunk: int
) -> int:
    url = target.get("url") or target.get("endpoint")
    if not isinstance(url, str) or not url:
        raise ToolError("transfer target http needs `url`")
    headers = {str(k): str(v) for k, v in (target.get("headers") or {}).items()}
    if auth and auth.get("token"):
        headers["Authorization"] = f"Bearer {auth['token']}"
    method = str(target.get("method") or "POST").upper()
    shown = url.split("?", 1)[0]
    async with httpx.AsyncClient(timeout=60.0) as client:
        for start in range(0, len(rows), chunk):
            batch = [
                {k: json_value(v) for k, v in row.items()} for row in rows[start : start + chunk]
            ]
            try:
                response = await client.request(method, url, headers=headers, json=batch)
            except httpx.HTTPError as exc:
                raise ToolError(
                    f"transfer target {method} {shown} failed: {exc}", retryable=True
                ) from None
            if not response.is_success:
                raise ToolError(
                    f"transfer target {method} {shown} returned HTTP {response.status_code}",
                    retryable=response.status_code >= 500,
                )
    return len(rows)
