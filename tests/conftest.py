"""Real-service fixtures.

A test session starts its own PostgreSQL (pgserver) and NATS JetStream (nats-server -js) on free
ports, unless NOETL_TEST_DATABASE_URL / NOETL_TEST_NATS_URL point at existing ones. Each test
gets its own database and its own stream, subject and consumer names, and removes them after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import httpx
import nats
import psycopg
import pytest

from noetl.config import Settings
from noetl.embedded.runtime import Runtime, running
from noetl.embedded.services import EmbeddedNats, EmbeddedPostgres

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


_OWN_BASETEMP = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Each test session gets its own temporary root, outside /tmp/pytest-of-<user>.

    pytest tightens that shared folder to mode 0700 whenever a session starts; the embedded
    PostgreSQL (run as the `pgserver` user when the tests run as root) then loses access to
    its data folder and dies mid-run. Concurrent test sessions on one machine did exactly that.
    """
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix="noetl-tests-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(_OWN_BASETEMP, None)
    if own and not os.environ.get("NOETL_KEEP_TEST_TMP"):
        shutil.rmtree(own, ignore_errors=True)


@dataclass
class Services:
    admin_url: str
    nats_url: str

    def database_url(self, name: str) -> str:
        parts = urlparse(self.admin_url)
        return urlunparse(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    started: list[Any] = []
    admin_url = os.environ.get("NOETL_TEST_DATABASE_URL")
    nats_url = os.environ.get("NOETL_TEST_NATS_URL")
    root = tmp_path_factory.mktemp("services")
    if not admin_url:
        pg = EmbeddedPostgres.start(root / "pg")
        started.append(pg)
        admin_url = pg.url
    if not nats_url:
        server = EmbeddedNats.start(root / "nats")
        started.append(server)
        nats_url = server.url

    def stop_all() -> None:
        for service in reversed(started):
            service.stop()

    def on_sigterm(signum: int, frame: Any) -> None:  # a killed test run leaves no servers
        stop_all()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield Services(admin_url, nats_url)
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_all()


def _unique() -> str:
    return uuid.uuid4().hex[:12]


@contextlib.asynccontextmanager
async def isolated_settings(
    services: Services, home: Path, **overrides: Any
) -> AsyncIterator[Settings]:
    """A fresh database and fresh stream, subject and consumer names; removed afterwards."""
    suffix = _unique()
    database = f"noetl_test_{suffix}"
    await asyncio.to_thread(_create_database, services.admin_url, database)
    value = Settings.from_env(
        {},
        **{
            "database_url": services.database_url(database),
            "nats_url": services.nats_url,
            "stream": f"NOETL_TEST_{suffix}",
            "subject": f"noetl_test.{suffix}",
            "consumer": f"noetl-test-{suffix}",
            "worker_id": f"test-worker-{suffix}",
            "relay_interval": 0.2,
            "relay_after": 1.0,
            "lease_seconds": 5.0,
            "worker_concurrency": 4,
            "home": home,
            **overrides,
        },
    )
    try:
        yield value
    finally:
        await _delete_stream(services.nats_url, value.stream)
        with psycopg.connect(services.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


STARTUP_DEADLINE = 180.0  # seconds a busy machine may take to give a test its services


def _create_database(admin_url: str, database: str) -> None:
    """CREATE DATABASE, retried while the machine is busy: concurrent test runs make it fail
    with "template1 is being accessed by other users" or "too many clients"."""
    deadline = time.monotonic() + STARTUP_DEADLINE
    delay = 0.1
    while True:
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=30) as conn:
                conn.execute(f'CREATE DATABASE "{database}"')
            return
        except psycopg.OperationalError:
            if time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


@pytest.fixture
async def settings(services: Services, tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings for one test: see `isolated_settings`."""
    async with isolated_settings(services, tmp_path / "home") as value:
        yield value


async def _delete_stream(url: str, stream: str) -> None:
    try:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    except Exception:
        return
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception:
        pass
    finally:
        await nc.close()


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """A server and one worker, in-process, over HTTP, on the test's PostgreSQL and NATS."""
    async with running(settings, workers=1) as value:
        yield value


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=runtime.url, timeout=30) as client:
        yield client


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """Poll `check` until it returns a truthy value; fail with its last value at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value: Any = None
    while loop.time() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last value: {value!r}")


async def wait_healthy(client: httpx.AsyncClient, *, timeout: float = STARTUP_DEADLINE) -> None:
    """Until the server at `client` answers /health (it may be starting or restarting)."""

    async def up() -> bool:
        try:
            return (await client.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(up, timeout=timeout)


def slow_chain(first_step_seconds: float) -> str:
    """start (sleeps) → middle → end, each adding one: the result is 3."""
    return f"""
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: slow_chain, path: tests/slow_chain}}
workflow:
  - step: start
    tool: {{kind: python, code: "import time; time.sleep({first_step_seconds}); result = 1"}}
    next: [middle]
  - step: middle
    tool: {{kind: python, input: {{x: "{{{{ start }}}}"}}, code: "result = x + 1"}}
    next: [end]
  - step: end
    tool: {{kind: python, input: {{x: "{{{{ middle }}}}"}}, code: "result = x + 1"}}
"""


async def wait_for_end(
    client: httpx.AsyncClient, execution_id: str, *, timeout: float = 30.0
) -> dict[str, Any]:
    async def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/api/executions/{execution_id}")).json()
        return body if body.get("status") in TERMINAL else None

    result: dict[str, Any] = await eventually(ended, timeout=timeout)
    return result


async def run_playbook(
    client: httpx.AsyncClient, content: str, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/api/execute", json={"playbook": content, "payload": payload or {}}
    )
    assert response.status_code == 201, response.text
    return await wait_for_end(client, response.json()["execution_id"])


async def event_log(client: httpx.AsyncClient, execution_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/executions/{execution_id}/events")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items
