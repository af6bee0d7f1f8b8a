"""The ``artifact`` tool: load (or store) a result kept by reference.

``action: get`` with ``result_ref`` (in the tool or its input; a stub with ``_ref`` or a bare
reference) returns ``{data: <the stored value>}``; ``action: put`` stores ``data`` (``store``:
auto, kv, object or disk) and returns ``{_ref, _store}``. See ``result_store``.
"""

from __future__ import annotations

from typing import Any

from noetl.tools import result_store
from noetl.tools.base import ToolCall, ToolError


class ArtifactTool:
    kind = "artifact"

    def __init__(self, store: result_store.ResultStore | None = None) -> None:
        self.store = store

    async def run(self, call: ToolCall) -> Any:
        action = str(call.config.get("action") or "get")
        store = self.store
        if store is None:
            raise ToolError("the artifact tool needs the worker's result store (none given)")
        if action == "get":
            ref = call.config.get("result_ref", call.input.get("result_ref"))
            if ref is None:
                ref = call.config.get("ref", call.input.get("ref"))
            if result_store.is_stub(ref):
                ref = ref["_ref"]
            if not result_store.is_ref(ref):
                raise ToolError(
                    "artifact get needs `result_ref`: a stored result's `_ref`"
                    f" (got {str(ref)[:100]!r})"
                )
            return {"data": await store.get(ref)}
        if action == "put":
            data = call.config.get("data", call.input.get("data"))
            kind = str(call.config.get("store") or "auto")
            ref = await store.put(data, store=kind, execution_id=call.execution_id, step=call.step)
            return {"_ref": ref, "_store": ref["store"]}
        raise ToolError(f"artifact action must be get or put, got {action!r}")
