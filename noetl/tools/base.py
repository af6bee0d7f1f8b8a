"""The tool interface: one input object in, one JSON-serialisable result out.

Errors::

    ToolError            a tool failed; the message is what the user sees
     └── UnknownToolError  no tool is registered for the kind
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolCall:
    """Everything a tool needs for one run."""

    kind: str
    config: Mapping[str, Any]
    """The tool's fields after template rendering, without ``kind``."""
    input: Mapping[str, Any]
    """Rendered input variables."""
    execution_id: int
    step: str
    auth: Mapping[str, Any] | None = None
    """The data of the credential named by the tool's ``auth`` field, resolved by the worker
    right before the run (e.g. ``{"host", "port", "user", "password", "database"}``)."""
    timeout: float | None = None
    """Seconds the call may take, decided once by the worker (``ToolRegistry.time_limit``)
    from the tool's ``timeout_seconds`` (alias ``timeout``) or the kind's default."""
    item: str | None = None
    """The label of the pipeline item this call runs (None for a step's single tool)."""

    @property
    def where(self) -> str:
        """The step, and the pipeline item within it: how python tracebacks name the code."""
        return self.step if self.item is None else f"{self.step} item {self.item}"

    def time_limit(self, default: float) -> float:
        """The call's time limit: ``timeout`` when the worker set it, else parsed from the
        config the same way (a tool called directly, e.g. in a test)."""
        return self.timeout if self.timeout is not None else timeout_seconds(self.config, default)


class ToolError(Exception):
    """A tool failed; message is what the user sees in the step error."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return self.message


class UnknownToolError(ToolError):
    """No tool is registered for the kind."""

    def __init__(self, kind: str, known: Iterable[str]) -> None:
        names = ", ".join(sorted(known))
        super().__init__(f"unknown tool kind {kind!r}; known kinds: {names}")
        self.kind = kind


class Tool(Protocol):
    """A tool kind; implementations keep no per-call state."""

    kind: str

    async def run(self, call: ToolCall) -> Any:
        """Return a JSON-serialisable result or raise ToolError."""
        ...


def timeout_seconds(config: Mapping[str, Any], default: float) -> float:
    """A tool's ``timeout_seconds`` (alias ``timeout``) as a positive number of seconds."""
    raw = config.get("timeout_seconds", config.get("timeout"))
    if raw is None:
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value) or value <= 0:
        raise ToolError(f"timeout_seconds must be a positive number, got {raw!r}")
    return value
