"""One JSON codec for the hot paths: orjson, falling back to the standard library for the
values orjson refuses (integers beyond 64 bits).

PostgreSQL cannot store NUL characters or lone surrogates in JSON text: `dumps` replaces them
with U+FFFD, so a tool result with binary junk in a string is stored instead of refused.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> bytes:
    try:
        data = orjson.dumps(value, default=str, option=_OPTIONS)
    except TypeError:  # lone surrogates, integers beyond 64 bits
        return json.dumps(storable(value), default=str).encode()
    if b"\\u0000" in data:
        return orjson.dumps(storable(value), default=str, option=_OPTIONS)
    return data


def storable(value: Any) -> Any:
    """`value` with every string PostgreSQL can store: NUL and lone surrogates → U+FFFD."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def clean_text(text: str) -> str:
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        text = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    return text


loads = orjson.loads
