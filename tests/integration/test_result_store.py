"""Results by reference on the real NATS (key/value, object store) and local disk: `output`
select/store, stubs with `_ref`, transparent loading by later steps, the artifact tool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from noetl.tools import ToolError
from noetl.tools.result_store import ResultStore, resolve_refs
from tests.conftest import Services, run_playbook

PLAYBOOK = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: by_reference, path: tests/by_reference}
workload: {count: 1000}
workflow:
  - step: start
    tool:
      kind: python
      input: {count: "{{ count }}"}
      code: |
        records = [{"id": i, "pad": "x" * 200} for i in range(count)]
        result = {"status": "ok", "count": count, "records": records}
    output: {store: {kind: auto}, output_select: [status, count]}
    next: [disk]
  - step: disk
    tool: {kind: python, code: "result = {'rows': list(range(10)), 'label': 'small'}"}
    output: {store: {kind: disk}, select: [label]}
    next: [reader]
  - step: reader
    tool:
      kind: python
      input:
        n: "{{ start.records | length }}"
        last: "{{ start['records'][-1]['id'] }}"
        has_ref: "{{ start._ref is defined }}"
        store: "{{ start._store }}"
        rows: "{{ disk.rows }}"
      code: |
        result = {"n": n, "last": last, "has_ref": has_ref, "store": store, "rows": rows}
    next: [load]
  - step: load
    tool: {kind: artifact, action: get, input: {result_ref: "{{ start._ref }}"}}
    next: [end]
  - step: end
    tool:
      kind: python
      input: {loaded: "{{ load.count }}", reader: "{{ reader }}", status: "{{ start.status }}"}
      code: |
        result = {"loaded": loaded, "status": status, **reader}
"""


async def test_a_stored_result_is_a_stub_that_later_steps_read_whole(
    api: httpx.AsyncClient,
) -> None:
    execution = await run_playbook(api, PLAYBOOK)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {
        "loaded": 1000,
        "status": "ok",
        "n": 1000,
        "last": 999,
        "has_ref": True,
        "store": "kv",
        "rows": list(range(10)),
    }
    events = (
        await api.get(f"/api/executions/{execution['execution_id']}/events", params={"limit": 500})
    ).json()["items"]
    (start,) = [
        e for e in events if e["step"] == "start" and e["event_type"] == "command.completed"
    ]
    assert set(start["result"]) == {"status", "count", "_ref", "_store"}  # not the records
    assert start["result"]["_ref"]["size"] > 200_000


async def test_the_store_round_trips_every_kind_and_names_missing_ones(
    services: Services, tmp_path: Path
) -> None:
    store = ResultStore(services.nats_url, tmp_path)
    try:
        big = {"blob": "y" * (600 * 1024)}
        for kind, value in (("kv", {"a": 1}), ("auto", big), ("disk", [1, 2]), ("object", "s")):
            ref = await store.put(value, store=kind, execution_id=7, step="s")
            assert await store.get(ref) == value
            stub = {"_ref": ref, "keep": True}
            resolved = await resolve_refs({"x": stub}, store)
            expected = {**value, **stub} if isinstance(value, dict) else value
            assert resolved == {"x": expected}
        auto_big = await store.put(big, store="auto", execution_id=7, step="s")
        assert auto_big["store"] == "object"
        with pytest.raises(ToolError, match="needs Google Cloud Storage"):
            await store.put({}, store="gcs", execution_id=7, step="s")
        gone = {**auto_big, "store": "disk"}
        with pytest.raises(ToolError, match="no longer exists"):
            await store.get(gone)
    finally:
        await store.close()


async def test_a_value_without_stored_results_comes_back_as_a_copy(tmp_path: Path) -> None:
    """No stub, no store touched (there is none here), and the mappings and lists are new."""
    store = ResultStore(None, tmp_path)
    value: dict[str, Any] = {"a": [1, {"b": "c"}], "n": None, "t": (1, 2)}
    resolved = await resolve_refs(value, store)
    assert resolved == value
    assert resolved is not value and resolved["a"] is not value["a"]
    assert resolved["a"][1] is not value["a"][1]
    assert resolved["t"] is value["t"]  # tuples were never copied
