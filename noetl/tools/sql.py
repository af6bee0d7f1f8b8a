"""Shared parts of the SQL tools (postgres, duckdb): config fields and result shaping.

Result of a call::

    {"columns": [...], "rows": [{column: value}, ...], "row_count": n}   # a statement returned rows
    {"affected_rows": n}                                                 # only writes / DDL

plus, as upstream reads it, each statement's own result as ``command_0``, ``command_1``, ...:
``{"status": "success", "columns", "rows", "row_count"}`` or
``{"status": "success", "row_count", "affected_rows"}``.

Values are made JSON-native: Decimal -> int or float when exact, else str; date/time ->
ISO 8601; UUID -> str; bytes -> base64; timedelta -> seconds; other objects -> str.
"""

from __future__ import annotations

import base64
import datetime
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from noetl.tools.base import ToolError

_MAX_EXACT_INT = 2**53
Params = list[Any] | dict[str, Any]


def sql_text(config: Mapping[str, Any], kind: str) -> str:
    """The SQL of a call: ``query``, its alias ``command``, or ``commands`` (a list of
    statements, run in order)."""
    raw = config.get("query", config.get("command", config.get("commands")))
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        raw = ";\n".join(item.strip().rstrip(";") for item in raw if item.strip())
    if not isinstance(raw, str) or not raw.strip():
        raise ToolError(
            f"{kind} tool needs `query` (or `command`, `commands`, `script`) with the SQL to run"
        )
    return raw


async def sql_source(config: Mapping[str, Any], kind: str) -> str:
    """``sql_text``, or the text of upstream's ``script: {uri, source}`` block."""
    if not any(config.get(name) for name in ("query", "command", "commands")) and config.get(
        "script"
    ):
        from noetl.tools.script_source import load_script

        return sql_text({"query": await load_script(config["script"], kind)}, kind)
    return sql_text(config, kind)


def with_statements(final: dict[str, Any], statements: list[dict[str, Any]]) -> dict[str, Any]:
    """Upstream's convention as well: each statement's own result as ``command_<i>``."""
    return {**final, **{f"command_{i}": result for i, result in enumerate(statements)}}


def statement_rows(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    return {"status": "success", **rows_result(columns, rows)}


def statement_count(count: int) -> dict[str, Any]:
    return {"status": "success", "row_count": max(count, 0), "affected_rows": max(count, 0)}


def sql_params(config: Mapping[str, Any]) -> Params | None:
    """``params``: a list binds positional placeholders, a mapping binds named ones."""
    raw = config.get("params")
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        return {str(name): value for name, value in raw.items()} or None
    if isinstance(raw, list | tuple):
        return list(raw) or None
    raise ToolError(f"params must be a list or a mapping, got {type(raw).__name__}")


def rows_result(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> dict[str, Any]:
    """Rows as objects keyed by column; repeated column names get ``_2``, ``_3``, ... suffixes."""
    names = unique_columns(columns)
    items = [
        {name: json_value(value) for name, value in zip(names, row, strict=True)} for row in rows
    ]
    return {"columns": names, "rows": items, "row_count": len(items)}


def affected_result(count: int) -> dict[str, Any]:
    return {"affected_rows": count}


def unique_columns(columns: Sequence[str]) -> list[str]:
    """Column names made unique so every value has its own key (``SELECT 1, 2`` in postgres)."""
    seen: set[str] = set()
    names: list[str] = []
    for column in columns:
        name, number = column, 1
        while name in seen:
            number += 1
            name = f"{column}_{number}"
        seen.add(name)
        names.append(name)
    return names


def json_value(value: Any) -> Any:
    """A database value as a JSON-native value (see the module docstring)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(item) for item in value]
    return str(value)


def _decimal(value: Decimal) -> int | float | str:
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value() and abs(value) <= _MAX_EXACT_INT:
        return int(value)
    number = float(value)
    if math.isfinite(number) and Decimal(repr(number)) == value:
        return number
    return str(value)
