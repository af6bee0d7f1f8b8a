"""Built-in tools by kind. Adding a tool: a new module and one line in ``_TOOLS``."""

from __future__ import annotations

from collections.abc import Callable

from noetl.tools.base import Tool, ToolCall, ToolError, UnknownToolError
from noetl.tools.noop import NoopTool
from noetl.tools.python import PythonTool

_TOOLS: dict[str, Callable[[], Tool]] = {
    "noop": NoopTool,
    "python": PythonTool,
}

KNOWN_KINDS: frozenset[str] = frozenset(_TOOLS)


def get_tool(kind: str) -> Tool:
    """Return the built-in tool for kind; raise UnknownToolError otherwise."""
    factory = _TOOLS.get(kind)
    if factory is None:
        raise UnknownToolError(kind, KNOWN_KINDS)
    return factory()


__all__ = [
    "KNOWN_KINDS",
    "Tool",
    "ToolCall",
    "ToolError",
    "UnknownToolError",
    "get_tool",
]
