"""The tools of one worker, by kind: created on first use, closed together.

A worker builds its own registry (with its own python pool) and passes it down; nothing here
is process-wide. ``time_limit`` is the one timeout rule of every tool: a tool's
``timeout_seconds`` (alias ``timeout``), else the kind's ``default_timeout``.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from noetl.dsl.tool_schema import UNAVAILABLE
from noetl.tools.base import Tool, UnknownToolError, timeout_seconds
from noetl.tools.unavailable import UnavailableTool

if TYPE_CHECKING:
    from noetl.tools.python_pool import PythonPool
    from noetl.tools.result_store import ResultStore

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0  # seconds, for a kind that names no default of its own

Factory = Callable[[], Tool]


def builtin_factories(
    python: PythonPool | None = None,
    results: ResultStore | None = None,
    max_response_bytes: int | None = None,
) -> dict[str, Factory]:
    """The built-in kinds; adding a tool is a new module and one line here. `results`: the
    worker's store of results kept by reference (the artifact tool reads it);
    `max_response_bytes`: the http tool's limit (its default if None). A kind's module
    is imported when the kind is first used: a worker loads the tools its steps use (the
    postgres and transfer tools' psycopg alone was a tenth of `noetl run`'s start-up)."""
    factories: dict[str, Factory] = {
        "noop": _imported("noop", "NoopTool"),
        "python": _imported("python", "PythonTool", python),
        "http": _imported("http", "HttpTool", max_response_bytes),
        "postgres": _imported("postgres", "PostgresTool"),
        "duckdb": _imported("duckdb", "DuckDBTool"),
        "shell": _imported("shell", "ShellTool"),
        "nats": _imported("nats", "NatsTool"),
        "transfer": _imported("transfer", "TransferTool"),
        "artifact": _imported("artifact", "ArtifactTool", results),
    }
    for kind in UNAVAILABLE:  # accepted kinds that need a cloud: they fail naming it
        factories[kind] = functools.partial(UnavailableTool, kind)
    return factories


def _imported(module: str, name: str, *args: Any) -> Factory:
    """A factory of the class `name` of `noetl.tools.<module>`, imported at the first call."""

    def create() -> Tool:
        tool: Tool = getattr(importlib.import_module(f"noetl.tools.{module}"), name)(*args)
        return tool

    return create


class ToolRegistry:
    def __init__(self, factories: Mapping[str, Factory] | None = None) -> None:
        self._factories = dict(factories if factories is not None else builtin_factories())
        self._instances: dict[str, Tool] = {}

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self._factories)

    def get(self, kind: str) -> Tool:
        """The tool for `kind` (the same object every time); UnknownToolError otherwise."""
        tool = self._instances.get(kind)
        if tool is None:
            factory = self._factories.get(kind)
            if factory is None:
                raise UnknownToolError(kind, self._factories)
            tool = self._instances[kind] = factory()
        return tool

    def time_limit(self, kind: str, config: Mapping[str, Any]) -> float:
        """Seconds a call of `kind` with `config` may take (ToolError when the value is bad)."""
        default = getattr(self.get(kind), "default_timeout", DEFAULT_TIMEOUT)
        return timeout_seconds(config, float(default))

    async def close(self) -> None:
        """Close what the tools hold (pools, clients); the next `get` creates them anew."""
        tools = list(self._instances.values())
        self._instances.clear()
        for tool in tools:
            close: Callable[[], Awaitable[None]] | None = getattr(tool, "close", None)
            if close is None:
                continue
            try:
                await close()
            except Exception:  # one tool failing to close must not keep the others open
                log.warning("closing the %s tool failed", tool.kind, exc_info=True)
