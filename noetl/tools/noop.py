"""The ``noop`` tool: routing-only steps."""

from __future__ import annotations

from typing import Any

from noetl.tools.base import ToolCall


class NoopTool:
    """Returns ``result`` if given, else ``{"message": message}``, else ``{}``."""

    kind = "noop"

    async def run(self, call: ToolCall) -> Any:
        if "result" in call.config:
            return call.config["result"]
        if "message" in call.config:
            return {"message": call.config["message"]}
        return {}
