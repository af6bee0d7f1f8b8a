"""The fast lane (noetl.server.fastlane) answers the worker's per-step routes as the routes
would: a valid body through the lane, anything it cannot parse or validate through FastAPI
(the same 422s as before), behind the same access control and body limit."""

from __future__ import annotations

import json
from typing import Any

import httpx

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.server.access import BearerAuth
from noetl.server.app import BodyLimit, create_app
from noetl.server.fastlane import FastLane
from tests.conftest import event_log, wait_for_end

TWO_STEPS = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: lane, path: tests/lane}
workflow:
  - {step: start, tool: {kind: noop, result: 1}, next: [end]}
  - {step: end, tool: {kind: noop, result: 2}}
"""


def test_the_lane_is_inside_access_control_and_the_body_limit() -> None:
    app = create_app(Settings.from_env({}), ui=False)
    outermost_first: list[object] = [m.cls for m in app.user_middleware]
    assert outermost_first == [BearerAuth, BodyLimit, FastLane]


async def _report(api: httpx.AsyncClient, command: dict[str, Any]) -> dict[str, Any]:
    body = {
        "events": [
            {
                "execution_id": command["execution_id"],
                "event_type": "command.completed",
                "command_id": command["command_id"],
                "attempt": command["attempt"],
                "worker_id": command["worker_id"],
                "result": command["tool"].get("result"),
            }
        ]
    }
    answer = await api.post("/api/events/batch", json=body)
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert isinstance(result, dict)
    return result


async def test_claim_and_report_through_the_lane(settings: Settings) -> None:
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": TWO_STEPS})).json()
        [issued] = [
            e
            for e in await event_log(api, started["execution_id"])
            if e["event_type"] == "command.issued"
        ]
        claim = await api.post(
            "/api/commands/claim",
            json={"worker_id": "w1", "event_ids": [issued["event_id"], "12345"]},
        )
        assert claim.status_code == 200, claim.text
        [first] = claim.json()["claimed"]
        assert claim.json()["refused"]["12345"]["status"] == 404
        answer = await _report(api, first)
        assert answer["status"] == 200 and answer["body"]["next"]["step"] == "end"
        again = await _report(api, first)  # recorded once: the second is a 409 in its slot
        assert again["status"] == 409 and "already" in again["body"]["message"]
        last = await _report(api, answer["body"]["next"])
        assert last["body"]["status"] == "COMPLETED"
        execution = await wait_for_end(api, started["execution_id"])
        assert execution["status"] == "COMPLETED" and execution["result"] == 2
        metrics = (await api.get("/metrics")).text
    assert 'route="/api/events/batch"' in metrics and 'route="/api/commands/claim"' in metrics


async def test_what_the_lane_cannot_validate_gets_the_routes_answer(api: httpx.AsyncClient) -> None:
    bogus = {"execution_id": "1", "event_type": "bogus", "worker_id": "w"}
    wrong = await api.post("/api/events/batch", json={"events": [bogus]})
    assert wrong.status_code == 422 and "event_type" in wrong.json()["message"]
    empty = await api.post("/api/commands/claim", json={"worker_id": "w", "event_ids": []})
    assert empty.status_code == 422 and "event_ids" in empty.json()["message"]
    broken = await api.post(
        "/api/events/batch", content=b'{"events": [', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422
    unknown = await api.post(
        "/api/events/batch",
        json={"events": [{**bogus, "event_type": "command.failed", "error": "x"}]},
    )
    [result] = unknown.json()["results"]  # valid, but its fields do not make a report
    assert unknown.status_code == 200 and result["status"] == 422
    odd = {**bogus, "event_type": "command.failed", "error": "x", "command_id": "c", "attempt": 1}
    for fields in [{"status": "gone"}, {"kind": "k" * 65}, {"retryable": []}, {"other": 1}]:
        refused = await api.post(
            "/api/events/batch", json={"events": [{**odd, "error_fields": fields}]}
        )
        assert refused.status_code == 422 and "error_fields" in refused.json()["message"]
    # a content type is JSON as FastAPI takes it: the route and the lane answer alike
    body = json.dumps({"events": [{**bogus, "event_type": "command.failed", "error": "x"}]})
    for content_type, status in [
        ("text/plain; note=json", 422),
        ("application/jsonp", 422),
        ("Application/vnd.noetl+JSON; charset=utf-8", 200),
    ]:
        answer = await api.post(
            "/api/events/batch", content=body, headers={"content-type": content_type}
        )
        assert answer.status_code == status, (content_type, answer.text)


async def test_an_execution_read_through_the_lane_is_the_routes_answer(
    api: httpx.AsyncClient,
) -> None:
    started = (await api.post("/api/execute", json={"playbook": TWO_STEPS})).json()
    lane = await wait_for_end(api, started["execution_id"])
    assert lane["status"] == "COMPLETED" and [s["step"] for s in lane["steps"]] == ["start", "end"]
    queried = await api.get(f"/api/executions/{started['execution_id']}", params={"x": "1"})
    assert queried.json() == lane  # a query string changes nothing, as on the route
    missing = await api.get("/api/executions/12345")
    assert missing.status_code == 404 and "12345" in missing.json()["message"]
    words = await api.get("/api/executions/abc")
    assert words.status_code == 404 and "integers" in words.json()["message"]
