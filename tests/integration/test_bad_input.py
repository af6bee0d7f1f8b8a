"""Bad input gets a clear 4xx or a FAILED execution with the cause; nothing half-written."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import event_log, run_playbook

HEADER = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: bad, path: tests/bad}
"""


async def _catalog(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await api.get("/api/catalog")).json()["items"]
    return items


async def test_python_exception_fails_the_execution_with_its_message(
    api: httpx.AsyncClient,
) -> None:
    execution = await run_playbook(
        api,
        HEADER
        + """
workflow:
  - step: start
    tool: {kind: python, code: "x = 1 / 0"}
    next: [end]
  - step: end
    tool: {kind: noop}
""",
    )
    assert execution["status"] == "FAILED"
    assert "ZeroDivisionError: division by zero" in execution["error"]
    assert "start" in execution["error"]
    events = await event_log(api, execution["execution_id"])
    kinds = [e["event_type"] for e in events]
    assert kinds[-1] == "playbook.failed"
    assert "command.failed" in kinds and "end" not in {e["step"] for e in events}


async def test_invalid_yaml_is_a_422_naming_the_line(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/catalog/register", content=HEADER + "workflow:\n  - step: start: oops\n"
    )
    assert response.status_code == 422
    body = response.json()
    assert "invalid YAML" in body["message"]
    assert body["problems"][0]["line"] == 5
    assert await _catalog(api) == []


async def test_unknown_step_in_next_is_rejected_at_registration(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/catalog/register",
        content=HEADER
        + """workflow:
  - step: start
    tool: {kind: noop}
    next: [{step: nowhere}]
""",
    )
    assert response.status_code == 422
    [problem] = response.json()["problems"]
    assert problem["field"] == "workflow[0].next[0].step"
    assert problem["line"] == 7
    assert "unknown step 'nowhere'" in problem["message"]
    assert await _catalog(api) == []


async def test_register_accepts_json_content_and_versions_changes(api: httpx.AsyncClient) -> None:
    text = HEADER + "workflow:\n  - step: start\n    tool: {kind: noop}\n"
    first = await api.post("/api/catalog/register", json={"content": text})
    same = await api.post("/api/catalog/register", json={"content": text})
    changed = await api.post("/api/catalog/register", content=text + "    desc: changed\n")
    assert [r.status_code for r in (first, same, changed)] == [201, 201, 201]
    assert [r.json()["version"] for r in (first, same, changed)] == [1, 1, 2]


async def test_unknown_tool_kind_is_rejected_with_the_known_kinds(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/catalog/register",
        content=HEADER
        + """workflow:
  - step: start
    tool: {kind: teleport}
""",
    )
    assert response.status_code == 422
    assert "teleport" in response.json()["message"] and "python" in response.json()["message"]


async def test_template_syntax_error_is_rejected_with_the_field(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/api/catalog/register",
        content=HEADER
        + """workflow:
  - step: start
    tool: {kind: python, input: {x: "{{ oops( }}"}, code: "result = x"}
""",
    )
    assert response.status_code == 422
    [problem] = response.json()["problems"]
    assert problem["field"] == "workflow[0].tool.input.x" and problem["line"] == 6


async def test_undefined_input_variable_fails_the_step_naming_it(api: httpx.AsyncClient) -> None:
    execution = await run_playbook(
        api,
        HEADER
        + """workflow:
  - step: start
    tool: {kind: python, input: {x: "{{ missing_thing }}"}, code: "result = x"}
""",
    )
    assert execution["status"] == "FAILED"
    assert "missing_thing" in execution["error"] and "'start'" in execution["error"]


async def test_unknown_ids_and_paths_are_404(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/executions/12345")).status_code == 404
    assert (await api.get("/api/executions/not-a-number")).status_code == 404
    assert (await api.get("/api/executions/12345/events")).status_code == 404
    assert (await api.get("/api/commands/12345")).status_code == 404
    claim = await api.post("/api/commands/12345/claim", json={"worker_id": "w"})
    assert claim.status_code == 404
    missing = await api.post("/api/execute", json={"path": "no/such/playbook"})
    assert missing.status_code == 404 and "no/such/playbook" in missing.json()["message"]


async def test_malformed_requests_are_422_with_the_field(api: httpx.AsyncClient) -> None:
    both = await api.post("/api/execute", json={"path": "a", "catalog_id": 1})
    assert both.status_code == 422
    wrong = await api.post(
        "/api/events", json={"execution_id": "1", "event_type": "bogus", "worker_id": "w"}
    )
    assert wrong.status_code == 422 and "event_type" in wrong.json()["message"]
    empty = await api.post("/api/catalog/register", content="")
    assert empty.status_code == 422


async def test_oversized_body_is_413(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/catalog/register", content="#" * (5 * 1024 * 1024))
    assert response.status_code == 413
    assert "NOETL_MAX_PAYLOAD_BYTES" in response.json()["message"]


async def test_cancel_ends_a_running_execution_and_its_commands(api: httpx.AsyncClient) -> None:
    started = await api.post(
        "/api/execute",
        json={
            "playbook": HEADER
            + """workflow:
  - step: start
    tool: {kind: python, code: "import time; time.sleep(60)"}
"""
        },
    )
    execution_id = started.json()["execution_id"]
    cancelled = await api.post(f"/api/executions/{execution_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    again = await api.post(f"/api/executions/{execution_id}/cancel")
    assert again.status_code == 409
    events = await event_log(api, execution_id)
    kinds = [e["event_type"] for e in events]
    assert kinds.count("command.cancelled") == 1 and kinds.count("playbook.cancelled") == 1
    [issued] = [e for e in events if e["event_type"] == "command.issued"]
    command = (await api.get(f"/api/commands/{issued['event_id']}")).json()
    assert command["status"] == "CANCELLED"
    claim = await api.post(f"/api/commands/{issued['event_id']}/claim", json={"worker_id": "w"})
    assert claim.status_code == 409


async def test_an_engine_bug_fails_the_execution_instead_of_leaving_it_running(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from noetl.engine import CommandCompleted

    decide = importlib.import_module("noetl.engine.decide")
    real = decide._Run.apply

    def broken(run: Any, incoming: Any) -> Any:
        if any(isinstance(event, CommandCompleted) for event in incoming):
            raise KeyError("simulated engine bug")
        return real(run, incoming)

    monkeypatch.setattr(decide._Run, "apply", broken)  # decide_all itself must catch it
    execution = await run_playbook(
        api, HEADER + "workflow:\n  - step: start\n    tool: {kind: noop}\n"
    )
    assert execution["status"] == "FAILED"
    assert "internal error in the engine: KeyError" in execution["error"]


async def test_text_postgres_cannot_store_is_replaced_not_refused(api: httpx.AsyncClient) -> None:
    execution = await run_playbook(
        api,
        HEADER + 'workflow:\n  - step: start\n    tool: {kind: python, code: "result = '
        "{'bytes': 'a\\\\x00b', 'broken': 'x\\\\udc80y'}\"}\n",
    )
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {"bytes": "a\ufffdb", "broken": "x\ufffdy"}


async def test_out_of_range_and_unstorable_request_values_are_422(api: httpx.AsyncClient) -> None:
    beat = await api.post("/api/workers/heartbeat", json={"worker_id": "w", "running": 10**12})
    assert beat.status_code == 422
    listed = await api.get("/api/executions", params={"status": "\x16bogus"})
    assert listed.status_code == 422
    body = {"name": "odd", "type": "x\x00y", "data": {"k": "\ud800"}, "tags": ["\x00"]}
    credential = await api.post(
        "/api/credentials", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert credential.status_code in {201, 422}, credential.text


async def test_a_step_name_with_a_nul_is_refused_not_left_running(api: httpx.AsyncClient) -> None:
    # was a 201 whose execution stayed RUNNING: no event of the step could be written
    content = HEADER + 'workflow:\n  - step: "a\\0b"\n    tool: {kind: noop}\n'
    response = await api.post("/api/execute", json={"playbook": content})
    assert response.status_code == 422, response.text
    assert "control character" in response.json()["message"]
    assert (await api.get("/api/executions")).json()["items"] == []


async def test_a_huge_error_message_fails_the_step_with_the_message_cut(
    api: httpx.AsyncClient,
) -> None:
    # the 10 MB report was refused (413) and the step ended as worker_lost after 3 attempts
    execution = await run_playbook(
        api,
        HEADER + "workflow:\n  - step: start\n    tool:\n      kind: python\n"
        "      code: \"raise ValueError('head' + 'x' * 10_000_000 + 'tail')\"\n",
    )
    assert execution["status"] == "FAILED"
    error = execution["error"]
    assert "worker_lost" not in error and "characters cut" in error
    assert "ValueError: headxx" in error and error.rstrip().endswith("tail")
    assert len(error) < 100_000
