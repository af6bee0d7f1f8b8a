"""Sub-playbooks: the child is its own execution; the parent step waits without a worker."""

from __future__ import annotations

import asyncio

import httpx

from noetl.config import Settings
from noetl.embedded.runtime import running
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


async def test_a_large_return_step_result_reaches_the_parent(api: httpx.AsyncClient) -> None:
    """The child's snapshot keeps a large result in its log (server.snapshots): the parent
    gets it from there."""
    child = CHILD.replace("tests/child}", "tests/child_large}").replace(
        'result = {"squared": n * n}', 'result = {"squared": n * n, "pad": "x" * 5000}'
    )
    await _register(api, child)
    parent = PARENT.replace("path: tests/child\n", "path: tests/child_large\n")
    parent = parent.replace("{'got': sq}", "{'got': sq, 'pad': len(pad)}").replace(
        'input: {sq: "{{ start.squared }}"}',
        'input: {sq: "{{ start.squared }}", pad: "{{ start.pad }}"}',
    )
    parent = parent.replace("path: tests/parent}", "path: tests/parent_large}")
    execution = await run_playbook(api, parent)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {"got": 49, "pad": 5000}


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


async def test_an_unregistered_child_after_another_step_fails_the_step_clearly(
    api: httpx.AsyncClient,
) -> None:
    # a child that cannot start, issued by a report (not by the start): the server's failure
    # report waited for the decision it was made in, which waited for it; the run hung
    late = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: late, path: tests/late}
workflow:
  - {step: start, tool: {kind: noop}, next: [call]}
  - {step: call, tool: {kind: playbook, path: tests/child}}
"""
    execution = await run_playbook(api, late)
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


# -- sub-playbooks as items of a pipeline: the worker starts and waits for the child ----------

PIPELINE = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: piped, path: tests/piped}
workload: {n: 3, timeout: 60, sleep: 0}
workflow:
  - step: start
    tool:
      - name: prepare
        kind: python
        input: {n: "{{ n }}"}
        code: "result = {'n': n + 1}"
      - name: child
        kind: playbook
        path: tests/child
        return_step: start
        timeout: "{{ timeout }}"
        payload: {sleep: "{{ sleep }}"}
        input: {n: "{{ _prev.n }}", fail: "{{ _attempt == 1 and _prev.n == 5 }}"}
        spec:
          policy:
            rules:
              - when: "{{ output.status == 'error' and 'told to fail' in output.error.message }}"
                then: {do: retry, attempts: 2, delay: 0.1}
      - name: finish
        kind: python
        input: {sq: "{{ child.squared }}", prev: "{{ _prev.squared }}"}
        code: "result = {'got': sq, 'prev': prev}"
"""


async def _children(api: httpx.AsyncClient, parent: str) -> list[dict[str, object]]:
    items = (await api.get("/api/executions", params={"parent": parent})).json()["items"]
    return sorted(items, key=lambda e: int(str(e["execution_id"])))


async def test_a_sub_playbook_item_of_a_pipeline_runs_with_its_payload_and_input(
    api: httpx.AsyncClient,
) -> None:
    await _register(api, CHILD)
    execution = await run_playbook(api, PIPELINE)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {"got": 16, "prev": 16}  # (3 + 1) squared, by label and _prev
    [child] = await _children(api, execution["execution_id"])
    assert child["status"] == "COMPLETED" and child["path"] == "tests/child"
    assert child["parent_command_id"] == f"{execution['execution_id']}:start"
    events = await event_log(api, execution["execution_id"])
    [claim] = [e for e in events if e["event_type"] == "command.claimed" and e["step"] == "start"]
    assert claim["worker_id"] != "noetl-server"  # a worker runs the pipeline and waits


async def test_a_retried_sub_playbook_item_starts_a_fresh_child_per_try(
    api: httpx.AsyncClient,
) -> None:
    await _register(api, CHILD)
    execution = await run_playbook(api, PIPELINE, {"n": 4})  # prepare gives 5: try 1 fails
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {"got": 25, "prev": 25}
    first, second = await _children(api, execution["execution_id"])
    assert first["status"] == "FAILED" and "told to fail" in str(first["error"])
    assert second["status"] == "COMPLETED"


async def test_a_sub_playbook_item_past_its_timeout_is_cancelled_and_fails_the_step(
    api: httpx.AsyncClient,
) -> None:
    await _register(api, CHILD)
    execution = await run_playbook(api, PIPELINE, {"timeout": 0.5, "sleep": 30})
    assert execution["status"] == "FAILED"
    assert "sub-playbook tests/child" in execution["error"]
    assert "timed out after 0.5 s" in execution["error"]
    [child] = await _children(api, execution["execution_id"])
    child = await wait_for_end(api, str(child["execution_id"]))
    assert child["status"] == "CANCELLED"


async def test_a_failed_sub_playbook_item_fails_the_pipeline_with_the_childs_error(
    api: httpx.AsyncClient,
) -> None:
    await _register(api, CHILD)
    failing = PIPELINE.replace("attempts: 2", "attempts: 1")
    execution = await run_playbook(api, failing, {"n": 4})
    assert execution["status"] == "FAILED"
    assert "sub-playbook tests/child (execution" in execution["error"]
    assert "child was told to fail" in execution["error"]


async def test_only_a_held_command_may_start_a_child(api: httpx.AsyncClient) -> None:
    await _register(api, CHILD)
    unknown = await api.post("/api/commands/12345/children", json={"path": "tests/child"})
    assert unknown.status_code == 404
    done = await run_playbook(api, PARENT)
    events = await event_log(api, done["execution_id"])
    [issued] = [e for e in events if e["event_type"] == "command.issued" and e["step"] == "end"]
    ended = await api.post(
        f"/api/commands/{issued['event_id']}/children", json={"path": "tests/child"}
    )
    assert ended.status_code == 409 and "not held by a worker" in ended.text


async def test_a_chain_of_more_than_32_nested_children_is_refused(api: httpx.AsyncClient) -> None:
    await _register(api, CHILD)
    noop = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: link}\nworkflow:\n"
    noop += "  - {step: start, tool: {kind: noop}}\n"
    parent = None
    for _ in range(32):  # 32 executions, each the child of the one before
        body = {"playbook": noop, "parent_execution_id": parent} if parent else {"playbook": noop}
        started = await api.post("/api/execute", json=body)
        parent = started.json()["execution_id"]
        await wait_for_end(api, parent)  # an ending parent cancels its running children
    started = await api.post(
        "/api/execute", json={"playbook": PIPELINE, "parent_execution_id": parent}
    )
    execution = await wait_for_end(api, started.json()["execution_id"])
    assert execution["status"] == "FAILED"
    assert "more than 32 nested sub-playbooks" in execution["error"]


async def test_a_child_past_its_steps_timeout_is_cancelled_and_fails_the_step(
    api: httpx.AsyncClient,
) -> None:
    """A step's `kind: playbook` tool with `timeout`: the relay cancels the child past its
    deadline and the parent's step fails with the reason (it used to wait for ever)."""
    await _register(api, CHILD)
    parent = PARENT.replace("return_step: start\n", "return_step: start\n      timeout: 1\n")
    execution = await run_playbook(api, parent, {"sleep": 60})
    assert execution["status"] == "FAILED"
    assert "sub-playbook tests/child" in execution["error"]
    reason = "cancelled: timed out: still running after its time limit of 1 s"
    assert reason in execution["error"]
    items = (await api.get("/api/executions")).json()["items"]
    [child] = [e for e in items if e["parent_execution_id"] == execution["execution_id"]]
    assert child["status"] == "CANCELLED" and "timed out" in child["error"]
    # a timeout that is not a positive number fails the step before a child starts
    wrong = parent.replace("timeout: 1\n", "timeout: '{{ n }}x'\n")
    failed = await run_playbook(api, wrong.replace("name: parent", "name: parent2"), {"sleep": 0})
    assert failed["status"] == "FAILED"
    assert "timeout_seconds must be a positive number, got '7x'" in failed["error"]
    # one past any storable deadline fails it too, clearly (it was a 422 of the whole start)
    huge = parent.replace("timeout: 1\n", "timeout: 1.0e+20\n").replace("name: parent", "name: p3")
    failed = await run_playbook(api, huge, {"sleep": 0})
    assert failed["status"] == "FAILED"
    assert "timeout_seconds must be at most 1000000000, got 1e+20" in failed["error"]


async def test_a_pipeline_waiting_for_its_child_lends_its_worker_slot(settings: Settings) -> None:
    """One worker with ONE slot runs a pipeline whose item waits for a sub-playbook: the
    waiting pipeline lends its slot, so the child's steps run on the same worker (they used to
    wait for the slot their parent held: a deadlock until the item's timeout)."""
    one_slot = settings.with_(worker_concurrency=1)
    async with (
        running(one_slot, workers=1) as runtime,
        httpx.AsyncClient(base_url=runtime.url, timeout=30) as api,
    ):
        await _register(api, CHILD)
        execution = await run_playbook(api, PIPELINE, {"timeout": 30})
        assert execution["status"] == "COMPLETED", execution["error"]
        assert execution["result"] == {"got": 16, "prev": 16}


async def test_a_playbook_calling_itself_after_a_step_stops_at_the_nesting_limit(
    api: httpx.AsyncClient,
) -> None:
    # each level started its child from another transaction, so the in-transaction depth was 0
    # every time and the chain grew without end
    recursive = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: self, path: tests/self}
workflow:
  - step: start
    tool: {kind: noop}
    next: [again]
  - step: again
    tool: {kind: playbook, path: tests/self}
"""
    await _register(api, recursive)
    started = await api.post("/api/execute", json={"path": "tests/self"})
    execution = await wait_for_end(api, started.json()["execution_id"])
    assert execution["status"] == "FAILED"
    assert "more than 32 nested sub-playbooks" in execution["error"]
    listed = (await api.get("/api/executions", params={"limit": 1000})).json()["items"]
    assert len(listed) <= 33
