"""Tool kinds that need a service this installation does not have (a cloud, a cluster).

Upstream playbooks that use them register unchanged; running one fails its step with an error
naming the kind and the missing service, never a crash or a hang.
"""

from __future__ import annotations

from typing import Any

from noetl.dsl.tool_schema import UNAVAILABLE
from noetl.tools.base import ToolCall, ToolError


class UnavailableTool:
    """Fails every call: `kind` needs `service`, which is not available here."""

    uses_auth = False  # the worker need not fetch a credential for a call that cannot run

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.service = UNAVAILABLE[kind]

    async def run(self, call: ToolCall) -> Any:
        detail = _detail(call)
        raise ToolError(
            f"tool kind {self.kind!r} needs {self.service}{detail}, which is not available"
            " in this installation"
        )


def _detail(call: ToolCall) -> str:
    """What the step tried to reach, when it says so (e.g. a subscription's source)."""
    for field in ("source", "provider", "image", "auth", "credential"):
        value = call.config.get(field)
        if isinstance(value, str) and value:
            return f" ({field} {value!r})"
    return ""
