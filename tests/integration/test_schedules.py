"""Schedules on real PostgreSQL and NATS: tagged executions, one execution per tick however
many schedulers run, missed ticks skipped (or caught up), the overlap policy, pause/resume."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg

from noetl.config import Settings
from noetl.embedded.runtime import Runtime
from noetl.server.scheduler import Scheduler
from noetl.server.service import Orchestrator
from tests.conftest import eventually, slow_chain

QUICK = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: tick, path: tests/tick}
workload: {who: nobody}
workflow:
  - step: start
    tool: {kind: python, input: {who: "{{ who }}"}, code: "result = {'hello': who}"}
"""
YEARLY = "0 0 1 1 *"


def orchestrator_of(runtime: Runtime) -> Orchestrator:
    app: Any = runtime.server.config.app
    orchestrator: Orchestrator = app.state.orchestrator
    return orchestrator


async def register(api: httpx.AsyncClient, content: str) -> None:
    response = await api.post("/api/catalog/register", json={"content": content})
    assert response.status_code == 201, response.text


async def schedule(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/api/schedules", json={"path": "tests/tick", **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def move_next_tick(settings: Settings, schedule_id: str, when: str) -> None:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute(
            "UPDATE noetl.schedule SET next_fire_at = %s::timestamptz WHERE schedule_id = %s",
            (when, int(schedule_id)),
        )


async def started_by(api: httpx.AsyncClient, schedule_id: str) -> list[dict[str, Any]]:
    response = await api.get("/api/executions", params={"schedule": schedule_id, "limit": 1000})
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_an_interval_schedule_starts_ordinary_tagged_executions(
    api: httpx.AsyncClient,
) -> None:
    await register(api, QUICK)
    created = await schedule(api, every="1s", payload={"who": "cron"})
    assert created["every_seconds"] == 1.0 and created["enabled"] and created["overlap"] == "skip"
    sid = created["schedule_id"]

    async def two_completed() -> list[dict[str, Any]]:
        done = [e for e in await started_by(api, sid) if e["status"] == "COMPLETED"]
        return done if len(done) >= 2 else []

    done = await eventually(two_completed)
    assert all(e["schedule_id"] == sid and e["path"] == "tests/tick" for e in done)
    assert done[0]["result"] == {"hello": "cron"}
    paused = await api.post(f"/api/schedules/{sid}/pause")
    assert paused.json()["enabled"] is False and paused.json()["next_fire_at"] is None
    shown = (await api.get(f"/api/schedules/{sid}")).json()
    started = [t for t in shown["ticks"] if t["outcome"] == "started"]
    assert {t["execution_id"] for t in started} >= {e["execution_id"] for e in done}
    listed = (await api.get("/api/schedules")).json()["items"]
    assert [s["schedule_id"] for s in listed] == [sid]
    assert (await api.delete(f"/api/schedules/{sid}")).status_code == 200
    assert (await api.get(f"/api/schedules/{sid}")).status_code == 404


async def test_each_tick_fires_once_however_many_schedulers_run(
    api: httpx.AsyncClient, runtime: Runtime, settings: Settings
) -> None:
    await register(api, QUICK)
    created = await schedule(api, cron=YEARLY, catch_up=True, overlap="allow")
    sid = created["schedule_id"]
    assert created["next_fire_at"].endswith("T00:00:00+00:00")
    move_next_tick(settings, sid, "2020-01-01T00:00:00Z")  # seven yearly ticks are due
    orchestrator = orchestrator_of(runtime)
    passes = await asyncio.gather(*(Scheduler(orchestrator).once() for _ in range(8)))
    executions = await started_by(api, sid)
    shown = (await api.get(f"/api/schedules/{sid}")).json()
    ticks = [t for t in shown["ticks"] if t["outcome"] == "started"]
    years = sorted(t["tick"][:4] for t in ticks)
    assert years == [str(year) for year in range(2020, 2027)]
    assert len(executions) == len(ticks) == 7
    assert sorted(e["execution_id"] for e in executions) == sorted(t["execution_id"] for t in ticks)
    assert sum(passes) <= 7  # the app's own scheduler may have taken some of them
    assert shown["next_fire_at"].startswith("2027-01-01")


async def test_a_schedule_that_cannot_be_handled_stops_no_other(
    api: httpx.AsyncClient, runtime: Runtime, settings: Settings
) -> None:
    await register(api, QUICK)
    bad = (await schedule(api, cron=YEARLY))["schedule_id"]
    good = (await schedule(api, cron=YEARLY, catch_up=True))["schedule_id"]
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        conn.execute(  # a row the API refuses today (written by an older server, or by hand)
            "UPDATE noetl.schedule SET cron = '0 0 30 2 *' WHERE schedule_id = %s", (int(bad),)
        )
    move_next_tick(settings, bad, "2020-01-01T00:00:00Z")  # due first
    move_next_tick(settings, good, "2026-01-01T00:00:00Z")
    await Scheduler(orchestrator_of(runtime)).once()

    async def fired() -> list[dict[str, Any]]:
        return await started_by(api, good)

    assert len(await eventually(fired)) == 1
    assert (await api.get(f"/api/schedules/{bad}")).json()["ticks"] == []


async def test_missed_ticks_are_skipped_unless_caught_up(
    api: httpx.AsyncClient, runtime: Runtime, settings: Settings
) -> None:
    await register(api, QUICK)
    created = await schedule(api, cron=YEARLY)
    sid = created["schedule_id"]
    move_next_tick(settings, sid, "2020-01-01T00:00:00Z")
    await Scheduler(orchestrator_of(runtime)).once()

    async def moved_on() -> dict[str, Any] | None:
        shown: dict[str, Any] = (await api.get(f"/api/schedules/{sid}")).json()
        return shown if shown["next_fire_at"].startswith("2027") else None

    shown = await eventually(moved_on)
    assert shown["ticks"] == [] and await started_by(api, sid) == []


async def test_overlap_skip_starts_nothing_while_the_last_run_runs(
    api: httpx.AsyncClient,
) -> None:
    await register(api, slow_chain(60).replace("tests/slow_chain", "tests/tick"))
    sid = (await schedule(api, every="1s"))["schedule_id"]

    async def skipped() -> list[dict[str, Any]]:
        shown = (await api.get(f"/api/schedules/{sid}")).json()
        return [t for t in shown["ticks"] if t["outcome"].startswith("skipped: the previous")]

    await eventually(skipped)
    await api.post(f"/api/schedules/{sid}/pause")
    executions = await started_by(api, sid)
    assert len(executions) == 1 and executions[0]["status"] == "RUNNING"
    await api.post(f"/api/executions/{executions[0]['execution_id']}/cancel")


async def test_bad_schedules_are_refused_naming_the_field(api: httpx.AsyncClient) -> None:
    await register(api, QUICK)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"cron": "every tuesday"}, 422, "cron:"),
        ({"every": "soon"}, 422, "every:"),
        ({"every": "0.1s"}, 422, "at least 1 s"),
        ({"cron": YEARLY, "every": "1m"}, 422, "exactly one of `cron` or `every`"),
        ({}, 422, "exactly one of"),
        ({"every": "1m", "timezone": "Mars/Olympus"}, 422, "unknown time zone"),
        ({"every": "1m", "path": "tests/nope"}, 404, "'tests/nope' is not registered"),
        ({"every": "1m", "overlap": "queue"}, 422, "overlap"),
        ({"every": 1e300}, 422, "at most"),
        ({"every": "99999999999d"}, 422, "at most"),
        ({"cron": "0 0 30 2 *"}, 422, "never fires"),
        ({"every": "1m", "payload": {"n": 2**70}}, 422, "payload.n"),
    ]
    for body, status, text in cases:
        response = await api.post("/api/schedules", json={"path": "tests/tick", **body})
        assert response.status_code == status, (body, response.text)
        assert text in response.text, (body, response.text)
    for number in ("NaN", "Infinity", "-Infinity"):  # Python's JSON reads them
        raw = '{"path": "tests/tick", "every": ' + number + "}"
        response = await api.post(
            "/api/schedules", content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (number, response.text)
        assert "every:" in response.text, response.text
    assert (await api.get("/api/schedules")).status_code == 200  # nothing half-written
    assert (await api.post("/api/schedules/42/pause")).status_code == 404
    assert (await api.delete("/api/schedules/x")).status_code == 404


async def test_a_resumed_schedule_counts_from_now(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    await register(api, QUICK)
    sid = (await schedule(api, cron=YEARLY, enabled=False))["schedule_id"]
    move_next_tick(settings, sid, "2020-01-01T00:00:00Z")
    resumed = (await api.post(f"/api/schedules/{sid}/resume")).json()
    assert resumed["enabled"] and resumed["next_fire_at"] >= "2027-01-01"
