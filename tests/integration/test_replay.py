"""Folding an execution's stored events through the engine gives the stored state."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
import pytest

from noetl.config import Settings
from noetl.dsl import parse_playbook
from noetl.engine.replay import fold
from tests.conftest import event_log, run_playbook, wait_for_end

BRANCHY = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: branchy, path: tests/branchy}
workload: {items: [1, 2, 3], hot: true}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'ok': True}"}
    next:
      spec: {mode: inclusive}
      arcs: [{step: left}, {step: right, when: "{{ hot }}"}, {step: never, when: "{{ not hot }}"}]
  - step: left
    loop: {in: "{{ items }}", iterator: n, spec: {mode: parallel, max_in_flight: 2}}
    tool: {kind: python, input: {n: "{{ n }}"}, code: "result = n * 10"}
    next: [join]
  - step: right
    tool: {kind: noop, result: {side: right}}
    set: {ctx.side: "{{ output.data.side }}"}
    next: [join]
  - step: never
    tool: {kind: noop}
    next: [join]
  - step: join
    tool:
      kind: python
      input: {total: "{{ left.results | sum }}", side: "{{ ctx.side | default(none) }}"}
      code: "result = {'total': total, 'side': side}"
"""


@pytest.mark.parametrize("payload", [{}, {"hot": False}])
async def test_fold_of_stored_events_equals_the_stored_state(
    api: httpx.AsyncClient, settings: Settings, payload: dict[str, Any]
) -> None:
    execution = await run_playbook(api, BRANCHY, payload)
    assert execution["status"] == "COMPLETED"
    expected_side = "right" if payload.get("hot", True) else None
    assert execution["result"] == {"total": 60, "side": expected_side}
    events = await event_log(api, execution["execution_id"])
    with psycopg.connect(settings.require_database_url()) as conn:
        row = conn.execute(
            "SELECT state FROM noetl.execution WHERE execution_id = %s",
            (int(execution["execution_id"]),),
        ).fetchone()
    assert row is not None
    replayed = fold(parse_playbook(BRANCHY), int(execution["execution_id"]), events)
    assert replayed.to_json() == row[0]


async def test_fold_of_a_reruns_events_equals_its_stored_state(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    failing = BRANCHY.replace("result = n * 10", "assert n != 3, 'three'; result = n * 10")
    first = await run_playbook(api, failing)
    assert first["status"] == "FAILED"
    response = await api.post(
        f"/api/executions/{first['execution_id']}/rerun",
        json={"from_step": "right", "version": "latest"},
    )
    assert response.status_code == 201, response.text
    execution = await wait_for_end(api, response.json()["execution_id"])
    events = await event_log(api, execution["execution_id"])
    assert any(e["event_type"] == "command.reused" for e in events)
    with psycopg.connect(settings.require_database_url()) as conn:
        row = conn.execute(
            "SELECT state FROM noetl.execution WHERE execution_id = %s",
            (int(execution["execution_id"]),),
        ).fetchone()
    assert row is not None
    replayed = fold(parse_playbook(failing), int(execution["execution_id"]), events)
    assert replayed.to_json() == row[0]
