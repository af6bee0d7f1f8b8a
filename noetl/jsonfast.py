"""The one JSON codec, and its rule for numbers.

The rule: a JSON number is a 64-bit integer (-2**63 .. 2**64-1) or a finite double, and a
value nests at most `MAX_DEPTH` levels. That is what orjson writes and reads back exactly.
The API refuses anything else with a 422 naming the field (`unportable` finds it), a tool
result that breaks it fails its step, and a template that produces it fails its step.

Whatever PostgreSQL already holds is still read: `loads` falls back to the standard library
for numbers orjson cannot decode (a row written before the rule), and `dumps` writes such a
number as its decimal text and a non-finite float as null, so a value read back can always be
shown and written again.

PostgreSQL cannot store NUL characters or lone surrogates in JSON text: `dumps` replaces them
with U+FFFD, so a tool result with binary junk in a string is stored instead of refused.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

# A mapping with keys other than strings (a tool's `{1: "a"}`) is written with its keys as
# text. orjson takes a slower path for every mapping when it is told to allow them (a W1
# snapshot: 31 -> 56 us), so a value is written without it first and, only when a key is
# not a string, again with it.
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_ANY_KEYS = _OPTIONS | orjson.OPT_NON_STR_KEYS

MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
MAX_DEPTH = 128  # orjson writes at most 255 levels; PostgreSQL and browsers choke far deeper


def dumps(value: Any) -> bytes:
    try:
        data = orjson.dumps(value, default=str, option=_OPTIONS)
    except TypeError:  # a key that is not a string, or what `_dumps_any` refuses too
        return _dumps_any(value)
    if data.find(b"\\u0000") != -1:  # not `in`, which tries an int first (a TypeError)
        return orjson.dumps(storable(value), default=str, option=_ANY_KEYS)
    return data


def _dumps_any(value: Any) -> bytes:
    try:
        data = orjson.dumps(value, default=str, option=_ANY_KEYS)
    except TypeError:  # lone surrogates, integers beyond 64 bits, nesting beyond 255
        return json.dumps(storable(value), default=str).encode()
    if data.find(b"\\u0000") != -1:
        return orjson.dumps(storable(value), default=str, option=_ANY_KEYS)
    return data


def storable(value: Any) -> Any:
    """`value` as every component can store and read it back: NUL and lone surrogates in
    strings become U+FFFD, integers beyond 64 bits their decimal text, non-finite floats null."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def clean_text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        text = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """orjson, or the standard library for what orjson refuses (a number beyond a double,
    nesting beyond 1024): whatever PostgreSQL holds can be read."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8", errors="replace")
        return json.loads(text)


def _path(parts: tuple[str | int, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def unportable(value: Any, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """(path, problem) of the first value that breaks the number rule or nests too deep, or
    None when every component can write and read `value` back exactly. Recursive, but never
    deeper than `max_depth` levels: a hostile value cannot exhaust the stack here. (A worker
    checks every result, the API every body: the path is made only for a value that fails.)"""
    found = _first_unportable(value, max_depth)
    if found is None:
        return None
    keys, problem = found
    if problem == _TOO_DEEP:
        problem = f"nested deeper than {max_depth} levels"
    return _path(tuple(reversed(keys))), problem


_TOO_DEEP = "nested too deep"


def _first_unportable(item: Any, levels: int) -> tuple[list[str | int], str] | None:
    """The keys to the first bad value, innermost first, and its problem."""
    kind = type(item)
    if kind is str or kind is bool or item is None:
        return None
    if kind is int:
        return None if MIN_INT <= item <= MAX_INT else ([], "integer out of range")
    if kind is float:
        return None if math.isfinite(item) else ([], "not a finite number")
    if isinstance(item, dict | list | tuple):
        if levels <= 0:
            return [], _TOO_DEEP
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in children:
            found = _first_unportable(child, levels - 1)
            if found is not None:
                found[0].append(key)
                return found
        return None
    if isinstance(item, bool | str):
        return None
    if isinstance(item, int):
        return None if MIN_INT <= item <= MAX_INT else ([], "integer out of range")
    if isinstance(item, float) and not math.isfinite(item):
        return [], "not a finite number"
    return None


def check(value: Any, field: str) -> None:
    """Raise ValueError naming `field` and the inner path when `value` breaks the rule."""
    found = unportable(value)
    if found is not None:
        where, problem = found
        joined = f"{field}.{where}" if where and not where.startswith("[") else field + where
        raise ValueError(
            f"{joined}: {problem} (JSON numbers must be 64-bit integers or finite doubles)"
        )
