"""Loop items and results through the real server: the snapshot keeps only counters, the
server loads a list loop's items and a finished loop's results from the event log."""

from __future__ import annotations

import httpx
import psycopg

from noetl.config import Settings
from tests.conftest import event_log, run_playbook

LIST_LOOP = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: list-loop, path: tests/list-loop}
workload: {words: [alpha, beta, gamma, delta, epsilon, zeta, eta]}
workflow:
  - step: start
    loop: {in: "{{ words }}", iterator: w, spec: {mode: parallel, max_in_flight: 2}}
    tool: {kind: python, input: {w: "{{ w }}"}, code: "result = w.upper()"}
    next: [middle]
  - step: middle
    tool: {kind: python, code: "result = 1"}
    next: [last]
  - step: last
    tool:
      kind: python
      input: {words: "{{ start.results }}", n: "{{ start.count }}"}
      code: "result = {'joined': '-'.join(words), 'n': n}"
"""


async def test_a_list_loop_runs_from_the_log_and_a_later_step_reads_its_results(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    execution = await run_playbook(api, LIST_LOOP)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {
        "joined": "ALPHA-BETA-GAMMA-DELTA-EPSILON-ZETA-ETA",
        "n": 7,
    }
    events = await event_log(api, execution["execution_id"])
    enter = [e for e in events if e["event_type"] == "step.enter" and e["step"] == "start"]
    assert enter[0]["payload"]["items"][0] == "alpha"
    with psycopg.connect(settings.require_database_url()) as conn:
        row = conn.execute(
            "SELECT state::text FROM noetl.execution WHERE execution_id = %s",
            (int(execution["execution_id"]),),
        ).fetchone()
    assert row is not None
    assert '"EPSILON"' not in row[0] and '"items"' not in row[0]  # counters only
    detail = (await api.get(f"/api/executions/{execution['execution_id']}")).json()
    (loop,) = [s["loop"] for s in detail["steps"] if s["step"] == "start"]
    assert loop == {"count": 7, "succeeded": 7, "failed": 0, "in_flight": 0}


LAST_IS_LOOP = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: last-loop, path: tests/last-loop}
workflow:
  - step: start
    loop: {in: 5, iterator: i, spec: {mode: parallel, max_in_flight: 2}}
    tool: {kind: python, input: {i: "{{ i }}"}, code: "result = i * i"}
"""


async def test_a_loop_that_ends_the_playbook_gives_its_results_as_the_result(
    api: httpx.AsyncClient,
) -> None:
    execution = await run_playbook(api, LAST_IS_LOOP)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {
        "results": [0, 1, 4, 9, 16],
        "count": 5,
        "succeeded": 5,
        "failed": 0,
        "stats": {"total": 5, "success": 5, "failed": 0},
    }
