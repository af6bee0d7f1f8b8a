"""An execution started with `timeout_seconds` is cancelled by the relay once still running
past it, with the reason; its detail shows the deadline; bad values are a 422."""

from __future__ import annotations

import httpx

from tests.conftest import wait_for_end

SLOW = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: slow, path: tests/slow}
workload: {sleep: 30}
workflow:
  - step: start
    tool:
      kind: python
      input: {s: "{{ sleep }}"}
      code: "import time\\ntime.sleep(s)\\nresult = 1"
"""


async def test_an_execution_past_its_timeout_is_cancelled_with_the_reason(
    api: httpx.AsyncClient,
) -> None:
    started = await api.post("/api/execute", json={"playbook": SLOW, "timeout_seconds": 1})
    assert started.status_code == 201, started.text
    execution_id = started.json()["execution_id"]
    detail = (await api.get(f"/api/executions/{execution_id}")).json()
    assert detail["status"] == "RUNNING" and detail["deadline"] is not None
    ended = await wait_for_end(api, execution_id)
    assert ended["status"] == "CANCELLED"
    assert ended["error"] == "timed out: still running after its time limit of 1 s"
    # without a limit there is no deadline, and an execution that ends in time keeps it
    quick = await api.post(
        "/api/execute", json={"playbook": SLOW, "payload": {"sleep": 0}, "timeout_seconds": 60}
    )
    done = await wait_for_end(api, quick.json()["execution_id"])
    assert done["status"] == "COMPLETED" and done["deadline"] is not None
    free = await api.post("/api/execute", json={"playbook": SLOW, "payload": {"sleep": 0}})
    assert (await wait_for_end(api, free.json()["execution_id"]))["deadline"] is None


async def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused(
    api: httpx.AsyncClient,
) -> None:
    for value in (0, -1, 2e9, "soon"):
        answer = await api.post("/api/execute", json={"playbook": SLOW, "timeout_seconds": value})
        assert answer.status_code == 422, (value, answer.text)
        assert "timeout_seconds" in answer.json()["message"]
