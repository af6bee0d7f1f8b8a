"""PostgreSQL restarted in the middle of an execution: nothing is lost, the run completes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.embedded.services import EmbeddedPostgres
from tests.conftest import event_log, eventually, slow_chain, wait_for_end


async def test_a_postgres_restart_mid_run_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    data = tmp_path / "pg"
    postgres = EmbeddedPostgres.start(data)
    try:
        settings = settings.with_(database_url=postgres.url)
        async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
            started = (await api.post("/api/execute", json={"playbook": slow_chain(1.5)})).json()
            execution_id = started["execution_id"]

            async def first_step_claimed() -> bool:
                events = await event_log(api, execution_id)
                return any(e["event_type"] == "command.claimed" for e in events)

            await eventually(first_step_claimed)
            postgres.stop()  # while the first step runs: its report meets a dead database
            await asyncio.sleep(2.0)
            postgres = EmbeddedPostgres.start(data)
            assert postgres.url == settings.database_url
            execution = await wait_for_end(api, execution_id, timeout=90)
            assert execution["status"] == "COMPLETED", execution["error"]
            assert execution["result"] == 3
            events = await event_log(api, execution_id)
            kinds = [e["event_type"] for e in events]
            assert kinds.count("command.completed") == 3
            assert kinds.count("playbook.completed") == 1
    finally:
        postgres.stop()
