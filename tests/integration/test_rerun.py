"""Re-run from failure through the API, on real PostgreSQL and NATS: steps that completed
before the restart point do not run again; the rest does."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import event_log, run_playbook, slow_chain, wait_for_end


def counting(path: Path) -> str:
    """start and each iteration append a line to a file; `check` fails while `fail` is set."""
    return f"""
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: counting, path: tests/counting}}
workload: {{fail: true, bad_item: 2, log: "{path}"}}
workflow:
  - step: start
    tool:
      kind: python
      input: {{log: "{{{{ log }}}}"}}
      code: |
        with open(log, "a") as f:
            f.write("start\\n")
        result = {{"token": "t-1"}}
    set: {{ctx.token: "{{{{ output.data.token }}}}"}}
    next: [each]
  - step: each
    loop: {{in: [0, 1, 2, 3], iterator: n, spec: {{mode: sequential}}}}
    tool:
      kind: python
      input:
        n: "{{{{ n }}}}"
        log: "{{{{ log }}}}"
        fail: "{{{{ fail }}}}"
        bad: "{{{{ bad_item }}}}"
      code: |
        with open(log, "a") as f:
            f.write(f"each {{n}}\\n")
        if fail and n == bad:
            raise ValueError(f"item {{n}} is bad")
        result = n * 10
    next: [check]
  - step: check
    tool:
      kind: python
      input: {{token: "{{{{ ctx.token }}}}", total: "{{{{ each.results | sum }}}}"}}
      code: |
        result = {{"token": token, "total": total}}
"""


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


async def test_a_rerun_from_failure_runs_only_what_failed(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    first = await run_playbook(api, counting(log))
    assert first["status"] == "FAILED" and "item 2 is bad" in first["error"]
    assert lines(log) == ["start", "each 0", "each 1", "each 2"]

    response = await api.post(
        f"/api/executions/{first['execution_id']}/rerun",
        json={"from_failed": True, "payload": {"fail": False}},
    )
    assert response.status_code == 201, response.text
    started = response.json()
    assert started["rerun_of"] == first["execution_id"]
    assert started["restart"] == ["each"] and started["reused"] == ["each", "start"]
    second = await wait_for_end(api, started["execution_id"])
    assert second["status"] == "COMPLETED", second["error"]
    assert second["result"] == {"token": "t-1", "total": 60}
    assert second["rerun_of"] == first["execution_id"]
    # start ran once in all; of the loop the failed iteration and the one never reached ran
    assert lines(log) == ["start", "each 0", "each 1", "each 2", "each 2", "each 3"]
    events = await event_log(api, second["execution_id"])
    reused = [
        e["command_id"].split(":", 1)[1] for e in events if e["event_type"] == "command.reused"
    ]
    assert reused == ["start", "each[0]", "each[1]"]
    issued = [
        e["command_id"].split(":", 1)[1] for e in events if e["event_type"] == "command.issued"
    ]
    assert issued == ["each[2]", "each[3]", "check"]
    listed = (await api.get("/api/executions")).json()["items"]
    assert {e["execution_id"]: e["rerun_of"] for e in listed}[second["execution_id"]] == (
        first["execution_id"]
    )


async def test_a_rerun_from_a_named_step_runs_that_step_and_what_follows(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    first = await run_playbook(api, counting(log), {"fail": False})
    assert first["status"] == "COMPLETED"
    response = await api.post(
        f"/api/executions/{first['execution_id']}/rerun", json={"from_step": "check"}
    )
    assert response.status_code == 201, response.text
    second = await wait_for_end(api, response.json()["execution_id"])
    assert second["status"] == "COMPLETED" and second["result"] == first["result"]
    assert len(lines(log)) == 5  # nothing before `check` ran again


async def test_rerun_refusals_say_why(api: httpx.AsyncClient, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    done = await run_playbook(api, counting(log), {"fail": False})
    url = f"/api/executions/{done['execution_id']}/rerun"
    nothing_failed = await api.post(url, json={"from_failed": True})
    assert nothing_failed.status_code == 422
    assert "no failed or unfinished step" in nothing_failed.json()["message"]
    unknown = await api.post(url, json={"from_step": "nope"})
    assert unknown.status_code == 422 and "'nope' is not in the playbook" in unknown.text
    both = await api.post(url, json={"from_step": "check", "from_failed": True})
    assert both.status_code == 422
    assert (await api.post("/api/executions/42/rerun", json={})).status_code == 404
    assert (await api.post(url, json={"from_step": "check", "version": 9})).status_code == 404
    bad_number = await api.post(url, json={"from_step": "check", "payload": {"n": 2**70}})
    assert bad_number.status_code == 422 and "payload.n" in bad_number.text
    assert len((await api.get("/api/executions")).json()["items"]) == 1  # nothing started


async def test_a_running_execution_cannot_be_rerun(api: httpx.AsyncClient) -> None:
    started = await api.post("/api/execute", json={"playbook": slow_chain(60)})
    execution_id = started.json()["execution_id"]
    refused = await api.post(f"/api/executions/{execution_id}/rerun", json={})
    assert refused.status_code == 409 and "still running" in refused.json()["message"]
    await api.post(f"/api/executions/{execution_id}/cancel")
    cancelled = await wait_for_end(api, execution_id)
    assert cancelled["status"] == "CANCELLED"
    # a cancelled execution re-runs from the step it left unfinished
    again = await api.post(f"/api/executions/{execution_id}/rerun", json={})
    assert again.status_code == 201, again.text
    assert again.json()["restart"] == ["start"]
    await api.post(f"/api/executions/{again.json()['execution_id']}/cancel")
