"""Sub-playbooks: the child is its own execution; the parent step waits without a worker."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import event_log, eventually, run_playbook, wait_for_end

CHILD = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: child, path: tests/child}
workload: {n: 1, fail: false, sleep: 0}
workflow:
  - step: start
    tool:
      kind: python
      input: {n: "{{ n }}", fail: "{{ fail }}", sleep: "{{ sleep }}"}
      code: |
        import time
        time.sleep(sleep)
        assert not fail, "child was told to fail"
        result = {"squared": n * n}
    next: [end]
  - step: end
    tool: {kind: noop, result: {done: true}}
"""

PARENT = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: parent, path: tests/parent}
workload: {n: 7, fail: false, sleep: 0}
workflow:
  - step: start
    tool:
      kind: playbook
      path: tests/child
      return_step: start
      input: {n: "{{ n }}", fail: "{{ fail }}", sleep: "{{ sleep }}"}
    next: [end]
  - step: end
    tool: {kind: python, input: {sq: "{{ start.squared }}"}, code: "result = {'got': sq}"}
"""


async def _register(api: httpx.AsyncClient, text: str) -> None:
    response = await api.post("/api/catalog/register", content=text)
    assert response.status_code == 201, response.text


async def test_the_parent_step_completes_with_the_child_result(api: httpx.AsyncClient) -> None:
    await _register(api, CHILD)
    execution = await run_playbook(api, PARENT)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {"got": 49}
    children = [
        e
        for e in (await api.get("/api/executions")).json()["items"]
        if e["parent_execution_id"] == execution["execution_id"]
    ]
    assert len(children) == 1
    child = children[0]
    assert child["status"] == "COMPLETED" and child["path"] == "tests/child"
    assert child["parent_command_id"] == f"{execution['execution_id']}:start"
    events = await event_log(api, execution["execution_id"])
    [claim] = [e for e in events if e["event_type"] == "command.claimed" and e["step"] == "start"]
    assert claim["worker_id"] == "noetl-server"


async def test_a_child_failure_fails_the_parent_step(api: httpx.AsyncClient) -> None:
    await _register(api, CHILD)
    execution = await run_playbook(api, PARENT, {"fail": True})
    assert execution["status"] == "FAILED"
    assert "sub-playbook tests/child" in execution["error"]
    assert "child was told to fail" in execution["error"]


async def test_an_unregistered_child_fails_the_step_clearly(api: httpx.AsyncClient) -> None:
    execution = await run_playbook(api, PARENT)
    assert execution["status"] == "FAILED"
    assert "'tests/child' is not registered" in execution["error"]


async def test_cancelling_the_parent_cancels_the_child(api: httpx.AsyncClient) -> None:
    await _register(api, CHILD)
    started = await api.post("/api/execute", json={"playbook": PARENT, "payload": {"sleep": 30}})
    parent_id = started.json()["execution_id"]

    async def child_running() -> str | None:
        items = (await api.get("/api/executions")).json()["items"]
        found = [e["execution_id"] for e in items if e["parent_execution_id"] == parent_id]
        return found[0] if found else None

    child_id = await eventually(child_running)
    await asyncio.sleep(0.2)
    assert (await api.post(f"/api/executions/{parent_id}/cancel")).status_code == 200
    child = await wait_for_end(api, child_id)
    assert child["status"] == "CANCELLED"
    assert "parent execution" in child["error"]


async def test_upstreams_payload_is_the_childs_input(api: httpx.AsyncClient) -> None:
    await _register(api, CHILD)
    parent = PARENT.replace('input: {n: "{{ n }}"', 'payload: {n: 5}\n      input: {n2: "{{ n }}"')
    parent = parent.replace("metadata: {name: parent, path: tests/parent}", "metadata: {name: p2}")
    execution = await run_playbook(api, parent)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {"got": 25}
