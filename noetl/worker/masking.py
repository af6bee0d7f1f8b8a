"""Mask the credential values a command was given in the text it printed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

MASK = "***"
MIN_SECRET = 4  # shorter values (ports, flags) would mask ordinary text


def secret_strings(values: Iterable[Any]) -> list[str]:
    """Every string (and number spelled as one) inside the values, longest first."""
    found = {text for value in values for text in _strings(value) if len(text) >= MIN_SECRET}
    return sorted(found, key=len, reverse=True)


def mask(text: str, values: Iterable[Any]) -> str:
    for secret in secret_strings(values):
        text = text.replace(secret, MASK)
    return text


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        yield str(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
