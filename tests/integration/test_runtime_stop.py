"""The in-process runtime of `noetl run`: it stops at once, also with a client still
connected, and its server's shutdown still runs (connections closed, lifespan ended); the
schema check of an up-to-date database applies nothing; the run hears from its own worker
when the execution has ended."""

from __future__ import annotations

import httpx
import psycopg
import pytest

from noetl.cli.progress import follow
from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.store.database import migrate, migrations


@pytest.mark.timeout(120)
async def test_the_runtime_stops_with_a_client_still_connected(settings: Settings) -> None:
    async with running(settings, workers=1) as runtime:
        api = runtime.client(timeout=30)
        assert (await api.get("/health")).status_code == 200  # a kept-alive connection
        server = runtime.server
    assert server.server_state.connections == set()
    assert not any(listening.is_serving() for listening in server.servers)
    with pytest.raises(httpx.TransportError):
        await api.get("/health")
    await api.aclose()


@pytest.mark.timeout(120)
async def test_the_runtime_client_speaks_plain_http_and_never_trusts_tls(
    settings: Settings,
) -> None:
    async with running(settings, workers=0) as runtime, runtime.client() as api:
        assert (await api.get("/health")).status_code == 200
        with pytest.raises(httpx.ConnectError):  # no CA is trusted: TLS fails to verify
            await api.get("https://127.0.0.1:1/")


@pytest.mark.timeout(120)
async def test_migrate_applies_every_version_once(settings: Settings) -> None:
    assert settings.database_url is not None
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, autocommit=True
    ) as conn:
        assert await migrate(conn) == [version for version, _, _ in migrations()]  # a new one
        assert await migrate(conn) == []


SLEEPY = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sleepy, path: tests/sleepy}
workflow:
  - step: start
    tool: {kind: python, code: "import time; time.sleep(0.5); result = 1"}
"""


@pytest.mark.timeout(120)
async def test_the_run_reads_the_execution_again_when_its_worker_hears_it_ended(
    settings: Settings,
) -> None:
    """`noetl run` reads the execution every `poll` seconds, and at once when a report's answer
    tells its own worker the execution ended: with a poll of 10 minutes, it still ends now."""
    async with running(settings, workers=1) as runtime, runtime.client(timeout=30) as api:
        ended = runtime.workers[0].ended
        started = await api.post("/api/execute", json={"playbook": SLEEPY})
        execution_id = started.json()["execution_id"]
        assert (await api.get(f"/api/executions/{execution_id}")).json()["status"] == "RUNNING"
        execution = await follow(api, execution_id, None, poll=600, ended=ended)
    assert execution["status"] == "COMPLETED"
    assert execution["result"] == 1
