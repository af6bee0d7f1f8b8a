"""NATS unavailable when an execution starts: it completes once NATS is back (relay)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.embedded.services import EmbeddedNats
from tests.conftest import event_log, wait_for_end

TWO_STEPS = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: two_steps, path: tests/two_steps}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'a': 1}"}
    next: [end]
  - step: end
    tool: {kind: python, input: {a: "{{ start.a }}"}, code: "result = {'b': a + 1}"}
"""


async def test_execution_started_during_a_nats_outage_completes_when_nats_returns(
    settings: Settings, tmp_path: Path
) -> None:
    own = EmbeddedNats.start(tmp_path / "nats")
    try:
        settings = settings.with_(nats_url=own.url)
        async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
            own.stop()
            started = await api.post("/api/execute", json={"playbook": TWO_STEPS})
            assert started.status_code == 201
            execution_id = started.json()["execution_id"]
            await asyncio.sleep(1.5)  # the outage lasts a while: nothing can run
            status = (await api.get(f"/api/executions/{execution_id}")).json()["status"]
            assert status == "RUNNING"
            own.restart()
            execution = await wait_for_end(api, execution_id, timeout=60)
            assert execution["status"] == "COMPLETED"
            assert execution["result"] == {"b": 2}
            events = await event_log(api, execution_id)
            assert [e["event_type"] for e in events].count("command.claimed") == 2
    finally:
        own.stop()
