"""What a command prints: tools record their stdout/stderr here, the worker reads it.

The worker opens a `CommandOutput` around each command (`capturing()`); a tool calls
`record(stream, text)` and knows nothing else of it; the credentials the command is given are
`remember_secret`ed, so the worker can mask them out. Each stream keeps its last
`LIMIT` characters; when more was written, the text starts with a note saying how much was cut.
Outside `capturing()` a record goes nowhere.

A policy retry (`retrying`) is written to stderr and also handed to the command's `on_retry`
listener, which the worker sets to tell the server at once (a `command.retrying` event), so
`noetl run` shows the retry while it happens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from noetl.protocol.outcome import Retry

LIMIT = 64 * 1024
STREAMS = ("stdout", "stderr")


class CommandOutput:
    """The bounded stdout and stderr of one command."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._parts: dict[str, list[str]] = {stream: [] for stream in STREAMS}
        self._size: dict[str, int] = dict.fromkeys(STREAMS, 0)
        self._cut: dict[str, int] = dict.fromkeys(STREAMS, 0)
        self.secrets: list[Any] = []  # credential data the command was given: masked out
        self.on_retry: Callable[[Retry], None] | None = None  # the worker tells the server

    def write(self, stream: str, text: str) -> None:
        if stream not in self._parts:
            raise ValueError(f"unknown stream {stream!r}; expected one of {STREAMS}")
        if not text:
            return
        parts = self._parts[stream]
        parts.append(text)
        self._size[stream] += len(text)
        excess = self._size[stream] - self._limit
        while excess > 0:  # drop from the front: the end of the output is what matters
            first = parts[0]
            if len(first) <= excess:
                parts.pop(0)
                dropped = len(first)
            else:
                parts[0] = first[excess:]
                dropped = excess
            self._size[stream] -= dropped
            self._cut[stream] += dropped
            excess -= dropped

    def text(self, stream: str) -> str:
        body = "".join(self._parts[stream])
        cut = self._cut[stream]
        return f"[... {cut} characters cut; the last {len(body)} kept ...]\n{body}" if cut else body

    def as_dict(self) -> dict[str, str]:
        """The non-empty streams by name."""
        return {stream: self.text(stream) for stream in STREAMS if self._parts[stream]}


_current: ContextVar[CommandOutput | None] = ContextVar("noetl_command_output", default=None)


def record(stream: str, text: str) -> None:
    """Add a tool's output to the command being run (nothing outside `capturing`)."""
    output = _current.get()
    if output is not None and text:
        output.write(stream, text)


def retrying(retry: Retry) -> None:
    """A policy retry of the command being run: a stderr line, and the worker is told."""
    record("stderr", f"{retry.item}: {retry.line()}\n")
    output = _current.get()
    if output is not None and output.on_retry is not None:
        output.on_retry(retry)


def remember_secret(value: Any) -> None:
    """Credential data given to the command being run: its values are masked in the output."""
    output = _current.get()
    if output is not None and value:
        output.secrets.append(value)


@contextlib.contextmanager
def capturing(limit: int = LIMIT) -> Iterator[CommandOutput]:
    """Collect what the tools called inside (and tasks started inside) record."""
    output = CommandOutput(limit)
    token = _current.set(output)
    try:
        yield output
    finally:
        _current.reset(token)
