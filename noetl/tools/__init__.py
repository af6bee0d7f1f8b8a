"""Built-in tools by kind. Adding a tool: a new module and one line in ``_TOOLS``.

Each kind is created once per process and reused (tools keep no per-call state, but some
hold resources, e.g. the postgres tool's connection pools); ``close_tools`` releases them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from noetl.tools.base import Tool, ToolCall, ToolError, UnknownToolError
from noetl.tools.duckdb import DuckDBTool
from noetl.tools.http import HttpTool
from noetl.tools.noop import NoopTool
from noetl.tools.postgres import PostgresTool
from noetl.tools.python import PythonTool
from noetl.tools.shell import ShellTool

logger = logging.getLogger(__name__)

_TOOLS: dict[str, Callable[[], Tool]] = {
    "noop": NoopTool,
    "python": PythonTool,
    "http": HttpTool,
    "postgres": PostgresTool,
    "duckdb": DuckDBTool,
    "shell": ShellTool,
}

KNOWN_KINDS: frozenset[str] = frozenset(_TOOLS)

_instances: dict[str, Tool] = {}


def get_tool(kind: str) -> Tool:
    """Return the built-in tool for kind (the same object every time); raise
    UnknownToolError for an unknown kind."""
    tool = _instances.get(kind)
    if tool is None:
        factory = _TOOLS.get(kind)
        if factory is None:
            raise UnknownToolError(kind, KNOWN_KINDS)
        tool = _instances[kind] = factory()
    return tool


async def close_tools() -> None:
    """Close what the tools hold (pools, clients); the next get_tool creates them anew."""
    tools = list(_instances.values())
    _instances.clear()
    for tool in tools:
        close: Callable[[], Awaitable[None]] | None = getattr(tool, "close", None)
        if close is None:
            continue
        try:
            await close()
        except Exception:  # one tool failing to close must not keep the others open
            logger.warning("closing the %s tool failed", tool.kind, exc_info=True)


__all__ = [
    "KNOWN_KINDS",
    "Tool",
    "ToolCall",
    "ToolError",
    "UnknownToolError",
    "close_tools",
    "get_tool",
]
