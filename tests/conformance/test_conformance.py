"""Every case of shared/conformance/manifest.yaml through the real server and workers.

Register, execute (payload merged over the workload), wait for a terminal status, check the
expectation. Every case must pass.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from noetl.embedded.runtime import running
from tests.conftest import Services, isolated_settings, wait_for_end

ROOT = Path(
    os.environ.get("NOETL_CONFORMANCE_DIR")
    or Path(__file__).resolve().parents[3] / "shared" / "conformance"
)
MANIFEST = ROOT / "manifest.yaml"


def _manifest() -> dict[str, Any]:
    if not MANIFEST.exists():
        return {"cases": []}
    data: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return data


def _cases() -> list[Any]:
    manifest = _manifest()
    defaults = manifest.get("defaults", {})
    return [pytest.param({**defaults, **case}, id=case["file"]) for case in manifest["cases"]]


pytestmark = pytest.mark.skipif(
    not MANIFEST.exists(), reason=f"no conformance manifest at {MANIFEST}"
)


@pytest.fixture(scope="module")
async def conformance_api(
    services: Services, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """One server and two workers for the whole suite, on their own database and stream."""
    home = tmp_path_factory.mktemp("conformance")
    async with (
        isolated_settings(services, home, relay_interval=0.5, lease_seconds=30.0) as settings,
        running(settings, workers=2) as runtime,
        httpx.AsyncClient(base_url=runtime.url, timeout=30) as client,
    ):
        for name in _manifest().get("credentials", []):
            credential = {"name": name, "type": "postgres", "data": {"dsn": settings.database_url}}
            response = await client.post("/api/credentials", json=credential)
            assert response.status_code == 201, response.text
        for file in _manifest().get("register_first", []):
            text = (ROOT / "playbooks" / file).read_text()
            response = await client.post("/api/catalog/register", content=text)
            assert response.status_code == 201, response.text
        yield client


def _substitute(value: Any, server_url: str) -> Any:
    if isinstance(value, str):
        return value.replace("${SERVER_URL}", server_url)
    if isinstance(value, dict):
        return {k: _substitute(v, server_url) for k, v in value.items()}
    return value


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", _cases())
async def test_conformance_case(conformance_api: httpx.AsyncClient, case: dict[str, Any]) -> None:
    api = conformance_api
    expect = case["expect"]
    text = (ROOT / "playbooks" / case["file"]).read_text()
    registered = await api.post("/api/catalog/register", content=text)
    if registered.status_code == 422:
        assert expect["status"] == "REJECTED_OR_FAILED", registered.text
        assert expect.get("error_contains", "") in registered.json()["message"]
        return
    assert registered.status_code == 201, registered.text
    payload = _substitute(case.get("payload") or {}, str(api.base_url).rstrip("/"))
    started = await api.post(
        "/api/execute", json={"catalog_id": registered.json()["catalog_id"], "payload": payload}
    )
    assert started.status_code == 201, started.text
    execution = await wait_for_end(api, started.json()["execution_id"], timeout=120)
    print(
        f"RESULT {case['file']}: {execution['status']} {execution['result']} {execution['error']}"
    )
    events = (
        await api.get(
            f"/api/executions/{execution['execution_id']}/events", params={"limit": 10000}
        )
    ).json()["items"]
    wanted = expect["status"]
    if wanted == "REJECTED_OR_FAILED":
        wanted = "FAILED"
    assert execution["status"] == wanted, f"{execution['status']}: {execution['error']}"
    if "error_contains" in expect:
        assert expect["error_contains"] in (execution["error"] or "")
    completed = {
        e["step"] for e in events if e["event_type"] == "step.exit" and e["status"] == "completed"
    }
    for step in expect.get("steps_completed", []):
        assert step in completed, f"{step} did not complete"
    for step, count in expect.get("step_enter_count", {}).items():
        entered = [e for e in events if e["event_type"] == "step.enter" and e["step"] == step]
        assert len(entered) == count, f"{step} entered {len(entered)} times"
    order = [(e["step"], e["event_type"]) for e in events]
    for step, before in expect.get("completed_after", {}).items():
        at = order.index((step, "command.completed"))
        for other in before:
            assert order.index((other, "command.completed")) < at, (
                f"{step} completed before {other}"
            )
