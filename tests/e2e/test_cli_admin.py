"""The CLI against a server, as a user types it: --version, --server/--token, exit 3 when no
server answers, listings, credentials, `register DIR`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from noetl.embedded.runtime import Runtime, running
from noetl.embedded.services import free_port
from tests.conftest import Services, eventually, isolated_settings, run_playbook

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "cli-test-token"

HELLO = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: {name}, path: {path}}}
workflow:
  - step: start
    tool: {{kind: python, code: "result = 1"}}
"""


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"NOETL_API_TOKEN", "SERVER_API_URL"}}
    return subprocess.run(
        [sys.executable, "-m", "noetl.cli.main", *args],
        env={**base, **(env or {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_cli, *args, env=env)


@pytest.fixture
async def guarded(services: Services, tmp_path: Path) -> AsyncIterator[Runtime]:
    """A server and a worker that require the API token."""
    async with (
        isolated_settings(services, tmp_path / "home", api_token=TOKEN) as settings,
        running(settings) as runtime,
    ):
        yield runtime


def test_version_prints_the_package_version() -> None:
    done = _cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("noetl ") and done.stdout.split()[1][0].isdigit()


def test_no_server_is_one_line_and_exit_3() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("executions",), ("status", "1"), ("execute", "x", "--wait"), ("logs", "1")):
        done = _cli("--server", url, *args)
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr + done.stdout
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and url in lines[0] and "noetl server start" in lines[0], lines
    shown = _cli("-v", "--server", url, "executions")
    assert shown.returncode != 0 and "Traceback" in shown.stderr


async def test_the_token_opens_the_api_and_its_absence_is_named(guarded: Runtime) -> None:
    refused = await cli("--server", guarded.url, "executions")
    assert refused.returncode == 1
    assert "HTTP 401" in refused.stderr and "--token or NOETL_API_TOKEN" in refused.stderr
    by_option = await cli("--server", guarded.url, "--token", TOKEN, "executions")
    assert by_option.returncode == 0, by_option.stderr
    by_env = await cli("workers", env={"SERVER_API_URL": guarded.url, "NOETL_API_TOKEN": TOKEN})
    assert by_env.returncode == 0, by_env.stderr
    assert guarded.workers[0].worker_id in by_env.stdout


async def test_listings_show_executions_catalog_and_workers(
    runtime: Runtime, tmp_path: Path
) -> None:
    folder = tmp_path / "playbooks"
    (folder / "nested" / "deeper").mkdir(parents=True)
    (folder / "a.yaml").write_text(HELLO.format(name="a", path="demo/a"))
    (folder / "nested" / "deeper" / "b.yml").write_text(HELLO.format(name="b", path="demo/b"))
    (folder / "nested" / "notes.yaml").write_text("kind: PlaybookTest\nplaybook: a.yaml\n")
    (folder / "nested" / "broken.yaml").write_text("kind: [unclosed\n")
    url = runtime.url
    registered = await cli("--server", url, "register", str(folder))
    assert registered.returncode == 0, registered.stderr
    assert "registered demo/a version 1" in registered.stdout
    assert "registered demo/b version 1" in registered.stdout
    assert "notes" not in registered.stdout
    again = await cli("--server", url, "register", str(folder))
    assert again.stdout.count("unchanged") == 2

    async with httpx.AsyncClient(base_url=url, timeout=30) as api:
        done = await run_playbook(api, HELLO.format(name="c", path="demo/c"))
    listed = await cli("--server", url, "executions", "--status", "completed", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["execution_id"] for e in json.loads(listed.stdout)] == [done["execution_id"]]
    table = await cli("--server", url, "executions", "--path", "demo/")
    assert done["execution_id"] in table.stdout and "COMPLETED" in table.stdout
    assert "started by" in table.stdout
    none = await cli("--server", url, "executions", "--path", "no/such/path")
    assert none.returncode == 0 and none.stdout.rstrip().endswith("no execution matches")

    async with httpx.AsyncClient(base_url=url, timeout=30) as api:  # a scheduled execution
        created = await api.post("/api/schedules", json={"path": "demo/a", "every": "1s"})
        sid = created.json()["schedule_id"]

        async def fired() -> list[dict[str, Any]]:
            found = await api.get("/api/executions", params={"schedule": sid})
            items: list[dict[str, Any]] = found.json()["items"]
            return items

        await eventually(fired)
        await api.delete(f"/api/schedules/{sid}")
    scheduled = await cli("--server", url, "executions", "--schedule", sid)
    assert scheduled.returncode == 0, scheduled.stderr
    assert f"schedule {sid}" in scheduled.stdout and "demo/a" in scheduled.stdout

    catalog = await cli("--server", url, "catalog", "list")
    assert all(p in catalog.stdout for p in ("demo/a", "demo/b", "demo/c"))
    shown = await cli("--server", url, "catalog", "show", "demo/b")
    assert shown.returncode == 0 and "metadata: {name: b, path: demo/b}" in shown.stdout
    missing = await cli("--server", url, "catalog", "show", "demo/zzz")
    assert missing.returncode == 2 and "not registered" in missing.stderr
    workers = await cli("--server", url, "workers")
    assert runtime.workers[0].worker_id in workers.stdout


async def test_credentials_are_added_listed_and_removed(runtime: Runtime) -> None:
    url = runtime.url
    added = await cli(
        "--server", url, "credentials", "add", "pg_main", "--type", "postgres",
        "--field", "password=hunter22", "--data", '{"user": "me"}', "--tag", "prod",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "credential pg_main stored (2 field(s))" in added.stdout
    listed = await cli("--server", url, "credentials", "list")
    assert "pg_main" in listed.stdout and "postgres" in listed.stdout
    assert "hunter22" not in listed.stdout
    removed = await cli("--server", url, "credentials", "remove", "pg_main")
    assert removed.returncode == 0
    gone = await cli("--server", url, "credentials", "remove", "pg_main")
    assert gone.returncode == 2 and "HTTP 404" in gone.stderr
    empty = await cli("--server", url, "credentials", "add", "x", "--type", "generic")
    assert empty.returncode == 2 and "--data JSON or --field" in empty.stderr


async def test_schedules_are_added_listed_paused_resumed_and_removed(runtime: Runtime) -> None:
    url = runtime.url
    async with httpx.AsyncClient(base_url=url, timeout=30) as api:
        body = {"content": HELLO.format(name="s", path="demo/s")}
        assert (await api.post("/api/catalog/register", json=body)).status_code == 201
    added = await cli(
        "--server", url, "schedule", "add", "demo/s", "--cron", "0 6 * * 1",
        "--timezone", "America/New_York", "--payload", '{"x": 1}', "--paused",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "demo/s cron 0 6 * * 1 (America/New_York); next paused" in added.stdout
    schedule_id = added.stdout.split()[1].rstrip(":")
    resumed = await cli("--server", url, "schedule", "resume", schedule_id)
    assert resumed.returncode == 0 and "resumed; next 20" in resumed.stdout
    listed = await cli("--server", url, "schedule", "list", "--json")
    (item,) = json.loads(listed.stdout)
    assert item["schedule_id"] == schedule_id and item["enabled"] and item["payload"] == {"x": 1}
    assert item["next_fire_at"] is not None
    paused = await cli("--server", url, "schedule", "pause", schedule_id)
    assert paused.returncode == 0
    table = await cli("--server", url, "schedule", "list")
    assert schedule_id in table.stdout and "paused" in table.stdout
    both = await cli("--server", url, "schedule", "add", "demo/s", "--every", "1m", "--cron", "x")
    assert both.returncode == 2 and "--cron EXPR or --every INTERVAL" in both.stderr
    bad = await cli("--server", url, "schedule", "add", "demo/s", "--every", "often")
    assert bad.returncode == 2 and "every:" in bad.stderr
    removed = await cli("--server", url, "schedule", "remove", schedule_id)
    assert removed.returncode == 0
    assert (await cli("--server", url, "schedule", "list", "--json")).stdout.strip() == "[]"


def test_validate_reports_every_problem_of_a_file_at_once(tmp_path: Path) -> None:
    playbook = tmp_path / "bad.yaml"
    playbook.write_text(
        "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: bad}\nworkflow:\n"
        "  - step: start\n    tool: {kind: http, url: 5, method: 7}\n    colour: red\n"
        "  - step: b\n    tool: {kind: python, code: 12, timeout_seconds: soon}\n"
    )
    done = _cli("validate", str(playbook))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == f"error: {playbook} is not a valid playbook (5 problem(s))"
    fields = sorted(line.split(": ")[1] for line in lines[:-1])
    assert fields == [
        "workflow[0].colour",
        "workflow[0].tool.method",
        "workflow[0].tool.url",
        "workflow[1].tool.code",
        "workflow[1].tool.timeout_seconds",
    ]
    places = [tuple(int(n) for n in line.split(": ")[0].split(":")[-2:]) for line in lines[:-1]]
    assert places == sorted(places)  # in the order of the file (colour, line 7, came last)
    assert "Traceback" not in done.stderr
