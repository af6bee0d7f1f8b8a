"""Template filters that quote a value for the text it is spliced into.

    {{ name | quote }}            POSIX shell word (as Ansible's `quote`): 'it'"'"'s'
    {{ name | sql_literal }}      PostgreSQL/DuckDB literal: 'it''s', NULL, 42, TRUE
    {{ name | sql_identifier }}   PostgreSQL/DuckDB identifier: "my ""odd"" table"

A value spliced into `command:` or `query:` text without one of these is code: a payload of
`x; rm -rf ~` runs. Better still, keep values out of the text: `params:` for SQL and `env:`
for shell (docs/security.md). `noetl validate` warns where a playbook splices unquoted.
"""

from __future__ import annotations

import json
import math
import shlex
from typing import Any

from noetl.errors import TemplateError

SAFE_FILTERS = frozenset({"quote", "sql_literal", "sql_identifier", "int", "float", "length"})


def quote(value: Any) -> str:
    """One POSIX shell word; a list becomes several words."""
    if isinstance(value, list | tuple):
        return " ".join(quote(item) for item in value)
    return shlex.quote("" if value is None else _text(value))


def sql_literal(value: Any) -> str:
    """A SQL literal: strings in single quotes (doubled inside), NULL, numbers, booleans;
    mappings and lists as their JSON text."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TemplateError(f"sql_literal: {value!r} is not a finite number")
        return repr(value)
    text = json.dumps(value) if isinstance(value, dict | list | tuple) else _text(value)
    if "\x00" in text:
        raise TemplateError("sql_literal: text with a NUL character cannot be a SQL literal")
    return "'" + text.replace("'", "''") + "'"


def sql_identifier(value: Any) -> str:
    """A quoted SQL identifier (a table or column name)."""
    text = _text(value)
    if not text or "\x00" in text:
        raise TemplateError(f"sql_identifier: {value!r} cannot be an identifier")
    return '"' + text.replace('"', '""') + '"'


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


FILTERS = {"quote": quote, "sql_literal": sql_literal, "sql_identifier": sql_identifier}
