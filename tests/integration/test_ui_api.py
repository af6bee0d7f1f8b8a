"""The JSON the web UI reads: list filters and cursors, catalog versions, the drawing, the
timeline, live progress and step details, on a real server, PostgreSQL, NATS and worker."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from noetl.config import Settings
from noetl.embedded.runtime import Runtime
from tests.conftest import event_log, run_playbook
from tests.ui.playbooks import FAILING, TOUR, UNFIRED


async def _ids(api: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await api.get("/api/executions", params={"brief": "true", **params})
    assert response.status_code == 200, response.text
    return [item["execution_id"] for item in response.json()["items"]]


async def test_the_list_filters_by_status_and_path_and_pages_by_cursor(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    tours = [(await run_playbook(api, TOUR))["execution_id"] for _ in range(3)]
    failed = (await run_playbook(api, FAILING))["execution_id"]
    newest_first = [failed, *reversed(tours)]
    assert await _ids(api) == newest_first
    assert await _ids(api, status="FAILED") == [failed]
    assert await _ids(api, status="COMPLETED", path="UI/TOUR") == list(reversed(tours))
    assert await _ids(api, path="100%_") == [failed]  # wildcards are taken literally
    assert await _ids(api, path="1%0") == []  # as a pattern it would match "100"
    assert await _ids(api, path="tour_") == []
    assert await _ids(api, limit=2) == newest_first[:2]
    assert await _ids(api, limit=2, before=newest_first[1]) == newest_first[2:]
    assert await _ids(api, limit=2, after=newest_first[3]) == newest_first[1:3]
    assert await _ids(api, parent=failed) == []
    brief = (await api.get("/api/executions", params={"brief": "true"})).json()["items"][1]
    assert brief["result"] is None
    full = (await api.get("/api/executions")).json()["items"][1]
    # two terminal steps, join and audit: the execution's result is that of the one that
    # completed last (DSL.md), which the timing decides; the full item carries it
    recorded = (await api.get(f"/api/executions/{tours[-1]}")).json()["result"]
    assert recorded in ({"sum": 91, "n": 6}, {"audited": True}), recorded
    assert full["execution_id"] == tours[-1] and full["result"] == recorded


async def test_the_list_uses_its_indexes_with_many_executions(
    runtime: Runtime, api: httpx.AsyncClient, settings: Settings
) -> None:
    """100,000 executions, 1 % failed: a page of failed ones, deep in the list, is read from
    the (status, execution_id) index, without sorting."""
    done = await run_playbook(api, TOUR)
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO noetl.execution (execution_id, catalog_id, path, version, status, state)"
            " SELECT i, %s, 'bulk/p' || (i %% 50), 1,"
            " CASE WHEN i %% 100 = 1 THEN 'FAILED' ELSE 'COMPLETED' END, '{}'"
            " FROM generate_series(1, 100000) AS i",
            (int(done["catalog_id"]),),
        )
        conn.execute("ANALYZE noetl.execution")
        plan = conn.execute(
            "EXPLAIN SELECT execution_id FROM noetl.execution WHERE status = 'FAILED'"
            " AND execution_id < 50000 ORDER BY execution_id DESC LIMIT 50"
        ).fetchall()
        text = "\n".join(row[0] for row in plan)
        assert "execution_status_id_idx" in text and "Sort" not in text, text
    page = await _ids(api, status="FAILED", before="50000", limit=50)
    assert page == [str(i) for i in range(49901, 44901, -100)]
    assert await _ids(api, path="bulk/p7", limit=3) == ["99957", "99907", "99857"]


async def test_catalog_versions_content_and_drawing(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    first = (await api.post("/api/catalog/register", json={"content": TOUR})).json()
    second = (await api.post("/api/catalog/register", json={"content": TOUR + "\n# v2\n"})).json()
    versions = (await api.get("/api/catalog/versions", params={"path": "tests/ui/tour"})).json()
    assert [v["version"] for v in versions["items"]] == [2, 1]
    entry = (await api.get(f"/api/catalog/{first['catalog_id']}")).json()
    assert entry["content"] == TOUR and entry["version"] == 1
    graph = (await api.get(f"/api/catalog/{second['catalog_id']}/graph")).json()
    assert graph["entry"] == "start"
    assert [s["step"] for s in graph["steps"]] == ["start", "square", "count", "audit", "join"]
    assert len(graph["arcs"]) == 5
    square = next(s for s in graph["steps"] if s["step"] == "square")
    assert square["loop"] == "parallel over {{ items }}"
    missing = await api.get("/api/catalog/versions", params={"path": "no/such"})
    assert missing.status_code == 404
    assert (await api.get("/api/catalog/123/graph")).status_code == 404
    assert (await api.get("/api/catalog/abc")).status_code == 404


async def test_timeline_live_and_step_details_of_a_finished_run(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    done = await run_playbook(api, TOUR)
    base = f"/api/executions/{done['execution_id']}"
    timeline = (await api.get(f"{base}/timeline")).json()
    spans = {s["step"]: s for s in timeline["steps"]}
    assert set(spans) == {"start", "square", "count", "audit", "join"}
    assert spans["square"]["commands"] == 6 and spans["square"]["completed"] == 6
    assert spans["square"]["attempts"] == 6 and spans["square"]["failed"] == 0
    assert len(spans["square"]["commands_drawn"]) == 6
    assert all(c["outcome"] == "command.completed" for c in spans["square"]["commands_drawn"])
    assert spans["join"]["started_at"] >= spans["square"]["ended_at"]

    log = await event_log(api, done["execution_id"])
    live = (await api.get(f"{base}/live", params={"after": 0, "limit": 5})).json()
    assert live["execution"]["status"] == "COMPLETED"
    assert [e["event_id"] for e in live["events"]] == [e["event_id"] for e in log[:5]]
    assert live["cursor"] == log[4]["event_id"]
    rest = (await api.get(f"{base}/live", params={"after": live["cursor"]})).json()
    assert len(rest["events"]) == len(log) - 5
    square = next(s for s in live["execution"]["steps"] if s["step"] == "square")
    assert square["loop"] == {"count": 6, "succeeded": 6, "failed": 0, "in_flight": 0}

    step = (await api.get(f"{base}/steps/join")).json()
    assert step["status"] == "completed"
    assert step["result"] == {"sum": 91, "n": 6}
    assert step["error"] is None
    assert (await api.get("/api/executions/1/live")).status_code == 404
    assert (await api.get("/api/executions/x/timeline")).status_code == 404


async def test_a_step_the_playbook_does_not_have_is_not_found(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    done = await run_playbook(api, FAILING)
    answer = await api.get(f"/api/executions/{done['execution_id']}/steps/nope")
    assert answer.status_code == 404
    assert "no step 'nope'" in answer.text and "start" in answer.text


async def test_a_failed_step_shows_its_error_with_the_traceback(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    done = await run_playbook(api, FAILING)
    assert done["status"] == "FAILED"
    step = (await api.get(f"/api/executions/{done['execution_id']}/steps/start")).json()
    assert step["status"] == "failed"
    assert "boom from the step" in step["error"]
    assert step["error_attempt"] == 1
    timeline = (await api.get(f"/api/executions/{done['execution_id']}/timeline")).json()
    (span,) = timeline["steps"]
    assert span["failed"] == 1 and "boom from the step" in span["last_error"]


async def test_large_results_are_cut_for_display(runtime: Runtime, api: httpx.AsyncClient) -> None:
    big = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: big, path: tests/ui/big}
workflow:
  - step: start
    tool: {kind: python, code: "result = 'x' * 200000"}
"""
    done = await run_playbook(api, big)
    step = (await api.get(f"/api/executions/{done['execution_id']}/steps/start")).json()
    assert step["result"]["truncated"] is True
    assert step["result"]["bytes"] > 200_000
    assert len(step["result"]["preview"]) == 65_536


async def test_a_step_shows_the_template_problems_its_run_met(
    runtime: Runtime, api: httpx.AsyncClient
) -> None:
    """Why an arc did not fire: its `when` failed to render (it is false, the run goes on)."""
    done = await run_playbook(api, UNFIRED)
    assert done["status"] == "COMPLETED"
    base = f"/api/executions/{done['execution_id']}/steps"
    step = (await api.get(f"{base}/start")).json()
    assert len(step["problems"]) == 1 and "arc to never" in step["problems"][0]
    assert "'missing' is undefined" in step["problems"][0]
    assert (await api.get(f"{base}/done")).json()["problems"] == []
    assert (await api.get(f"{base}/never")).json()["problems"] == []
