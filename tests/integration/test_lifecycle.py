"""A playbook runs end to end through server, PostgreSQL, NATS JetStream and a worker."""

from __future__ import annotations

import httpx

from tests.conftest import event_log, run_playbook

THREE_STEPS = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: three_steps, path: tests/three_steps}
workload: {n: 2}
workflow:
  - step: start
    tool: {kind: python, input: {n: "{{ n }}"}, code: "result = {'n': n + 1}"}
    next: [{step: double}]
  - step: double
    tool: {kind: python, input: {n: "{{ start.n }}"}, code: "result = {'n': n * 2}"}
    set: {ctx.doubled: "{{ output.data.n }}"}
    next: [{step: end}]
  - step: end
    tool: {kind: python, input: {n: "{{ ctx.doubled }}"}, code: "result = {'final': n}"}
"""


def _lifecycle(step: str) -> list[str]:
    return ["step.enter", "command.issued", "command.claimed", "command.completed", "step.exit"]


async def test_multi_step_playbook_completes_with_its_result(api: httpx.AsyncClient) -> None:
    execution = await run_playbook(api, THREE_STEPS, {"n": 4})
    assert execution["status"] == "COMPLETED"
    assert execution["result"] == {"final": 10}
    assert execution["error"] is None
    assert [s["step"] for s in execution["steps"]] == ["start", "double", "end"]
    assert all(s["status"] == "completed" for s in execution["steps"])


async def test_event_log_is_exactly_the_documented_lifecycle(api: httpx.AsyncClient) -> None:
    execution = await run_playbook(api, THREE_STEPS)
    events = await event_log(api, execution["execution_id"])
    expected = ["playbook.initialized"]
    for step in ("start", "double", "end"):
        expected += _lifecycle(step)
    expected.append("playbook.completed")
    assert [e["event_type"] for e in events] == expected
    steps = [e["step"] for e in events if e["event_type"] == "step.enter"]
    assert steps == ["start", "double", "end"]
    claimed = [e for e in events if e["event_type"] == "command.claimed"]
    assert all(e["attempt"] == 1 and e["worker_id"] for e in claimed)


async def test_execution_list_and_catalog_show_the_run(api: httpx.AsyncClient) -> None:
    execution = await run_playbook(api, THREE_STEPS)
    listed = (await api.get("/api/executions")).json()["items"]
    assert execution["execution_id"] in [e["execution_id"] for e in listed]
    catalog = (await api.get("/api/catalog")).json()["items"]
    assert [(c["path"], c["version"]) for c in catalog] == [("tests/three_steps", 1)]


NOW = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: now, path: tests/now}
workload: {at: "{{ now() }}"}
workflow:
  - step: start
    tool: {kind: python, input: {at: "{{ at }}"}, code: "result = {'at': at}"}
"""


async def test_now_is_the_start_time_the_server_records(api: httpx.AsyncClient) -> None:
    """`now()` rendered by the server is the time in `playbook.initialized` (replayable)."""
    from datetime import UTC, datetime

    execution = await run_playbook(api, NOW)
    events = await event_log(api, execution["execution_id"])
    started_at = events[0]["payload"]["started_at"]
    assert execution["result"] == {"at": started_at}
    moment = datetime.fromisoformat(started_at)
    assert moment.utcoffset() is not None and moment <= datetime.now(UTC)
