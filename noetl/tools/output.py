"""What a command prints: tools record their stdout/stderr here, the worker reads it.

The worker opens a `CommandOutput` around each command (`capturing()`); a tool calls
`record(stream, text)` and knows nothing else of it; the credentials the command is given are
`remember_secret`ed, so the worker can mask them out (and `concealed` masks them in a value a
tool sends out of the worker itself: the result store). Each stream keeps its last
`LIMIT` characters; when more was written, the text starts with a note saying how much was cut.
Outside `capturing()` a record goes nowhere.

A policy retry (`retrying`) is written to stderr and also handed to the command's `on_retry`
listener, which the worker sets to tell the server at once (a `command.retrying` event), so
`noetl run` shows the retry while it happens.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from noetl.masking import Mask
from noetl.protocol.outcome import Retry

LIMIT = 64 * 1024
STREAMS = ("stdout", "stderr")


class CommandOutput:
    """The bounded stdout and stderr of one command. Its lists and counters are made by the
    first write of a stream: most commands print nothing (the worker opens one per command)."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._parts: dict[str, list[str]] = {}
        self._size: dict[str, int] = {}
        self._cut: dict[str, int] = {}
        self.secrets: list[Any] = []  # credential data the command was given: masked out
        self.masked = False  # `concealed` replaced a secret: the outcome says so
        self.on_retry: Callable[[Retry], None] | None = None  # the worker tells the server

    def write(self, stream: str, text: str) -> None:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}; expected one of {STREAMS}")
        if not text:
            return
        parts = self._parts.setdefault(stream, [])
        parts.append(text)
        self._size[stream] = self._size.get(stream, 0) + len(text)
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
            self._cut[stream] = self._cut.get(stream, 0) + dropped
            excess -= dropped

    def text(self, stream: str) -> str:
        if stream not in STREAMS:
            raise KeyError(stream)
        body = "".join(self._parts.get(stream, ()))
        cut = self._cut.get(stream, 0)
        return f"[... {cut} characters cut; the last {len(body)} kept ...]\n{body}" if cut else body

    def as_dict(self) -> dict[str, str]:
        """The non-empty streams by name."""
        if not self._parts:
            return {}
        return {stream: self.text(stream) for stream in STREAMS if self._parts.get(stream)}


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


def concealed(value: Any) -> Any:
    """`value` with the secrets of the command being run masked (noetl.masking). For what a
    tool sends out of the worker before the outcome's masking runs: a result kept in the
    result store is written there (and read by later steps) as it is given."""
    output = _current.get()
    if output is None or not output.secrets:
        return value
    value, hit = Mask(output.secrets).value(value)
    output.masked = output.masked or hit
    return value


def capturing(limit: int = LIMIT) -> _Capturing:
    """Collect what the tools called inside (and tasks started inside) record."""
    return _Capturing(CommandOutput(limit))


class _Capturing:
    """`capturing()`'s context manager (a class, not a generator: the worker opens one per
    command)."""

    def __init__(self, output: CommandOutput) -> None:
        self.output = output
        self.token: Token[CommandOutput | None] | None = None

    def __enter__(self) -> CommandOutput:
        self.token = _current.set(self.output)
        return self.output

    def __exit__(self, *exc: object) -> None:
        if self.token is not None:
            _current.reset(self.token)
