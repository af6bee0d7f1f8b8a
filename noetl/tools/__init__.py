"""Built-in tools by kind, behind one small interface (``noetl.tools.base``).

A worker holds its tools in a ``ToolRegistry`` (``noetl.tools.registry``). ``get_tool`` and
``close_tools`` are the same over one default registry, for direct calls (tests, scripts).
"""

from __future__ import annotations

from noetl.tools.base import Tool, ToolCall, ToolError, UnknownToolError
from noetl.tools.registry import ToolRegistry, builtin_factories

KNOWN_KINDS: frozenset[str] = frozenset(builtin_factories())

_default = ToolRegistry()


def get_tool(kind: str) -> Tool:
    """The tool for kind from the default registry; UnknownToolError for an unknown kind."""
    return _default.get(kind)


async def close_tools() -> None:
    """Close what the default registry's tools hold; the next get_tool creates them anew."""
    await _default.close()


__all__ = [
    "KNOWN_KINDS",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolRegistry",
    "UnknownToolError",
    "close_tools",
    "get_tool",
]
