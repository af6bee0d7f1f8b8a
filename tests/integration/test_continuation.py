"""Continuation (NOETL_CONTINUATION): a report whose decision issues exactly one command gets
that command back, claimed for the reporting worker in the same transaction. Crash safety is
that of any claim: a worker that never runs it loses it when the lease lapses."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.worker.worker import Worker
from tests.conftest import event_log, wait_for_end

TWO_STEPS = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: two, path: tests/two}
workflow:
  - {step: start, tool: {kind: noop, result: 1}, next: [end]}
  - {step: end, tool: {kind: noop, result: 2}}
"""


async def _claim_first(api: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    [issued] = [
        e for e in await event_log(api, execution_id) if e["event_type"] == "command.issued"
    ]
    claim = await api.post(f"/api/commands/{issued['event_id']}/claim", json={"worker_id": "w1"})
    assert claim.status_code == 200
    command: dict[str, Any] = claim.json()
    return command


async def _report(api: httpx.AsyncClient, command: dict[str, Any], **extra: Any) -> Any:
    body = {
        "execution_id": command["execution_id"],
        "event_type": "command.completed",
        "command_id": command["command_id"],
        "attempt": command["attempt"],
        "worker_id": command["worker_id"],
        "result": command["tool"].get("result"),
        **extra,
    }
    answer = await api.post("/api/events", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_the_one_next_command_comes_back_claimed_for_the_reporting_worker(
    settings: Settings,
) -> None:
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": TWO_STEPS})).json()
        first = await _claim_first(api, started["execution_id"])
        answer = await _report(api, first)
        following = answer["next"]
        assert (following["step"], following["attempt"], following["worker_id"]) == ("end", 1, "w1")
        held = (await api.get(f"/api/commands/{following['event_id']}")).json()
        assert (held["status"], held["worker_id"]) == ("CLAIMED", "w1")
        last = await _report(api, following)
        assert "next" not in last and last["status"] == "COMPLETED"
        execution = await wait_for_end(api, started["execution_id"])
    assert execution["status"] == "COMPLETED" and execution["result"] == 2


async def test_without_continuation_or_when_the_worker_declines_the_command_is_published(
    settings: Settings,
) -> None:
    for configured, takes_next in ((False, True), (True, False)):
        changed = settings.with_(continuation=configured)
        async with running(changed, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
            started = (await api.post("/api/execute", json={"playbook": TWO_STEPS})).json()
            first = await _claim_first(api, started["execution_id"])
            answer = await _report(api, first, takes_next=takes_next)
            assert "next" not in answer and answer["issued"] == 1
            events = await event_log(api, started["execution_id"])
            [issued] = [
                e for e in events if e["event_type"] == "command.issued" and e["step"] == "end"
            ]
            command = (await api.get(f"/api/commands/{issued['event_id']}")).json()
            assert command["status"] == "PENDING"


async def test_a_continued_command_its_worker_never_runs_is_run_by_another_after_the_lease(
    settings: Settings,
) -> None:
    settings = settings.with_(lease_seconds=0.5)
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": TWO_STEPS})).json()
        first = await _claim_first(api, started["execution_id"])
        assert (await _report(api, first))["next"]["step"] == "end"  # w1 "crashes" here
        rescuer = Worker(rt.settings.with_(worker_id="rescuer"))
        working = asyncio.create_task(rescuer.run())
        try:
            execution = await wait_for_end(api, started["execution_id"])
        finally:
            rescuer.stop()
            await working
        events = await event_log(api, started["execution_id"])
    assert execution["status"] == "COMPLETED" and execution["result"] == 2
    claims = [
        (e["attempt"], e["worker_id"])
        for e in events
        if e["event_type"] == "command.claimed" and e["step"] == "end"
    ]
    assert claims == [(1, "w1"), (2, "rescuer")]


async def test_a_conflict_at_commit_is_a_409_and_leaves_nothing_written(
    settings: Settings,
) -> None:
    """The report transaction is begun and committed by hand (two round trips): a unique-index
    conflict in its last writes rolls it all back, answers 409, and the connection serves the
    next report."""
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": TWO_STEPS})).json()
        execution_id = started["execution_id"]
        first = await _claim_first(api, execution_id)
        taken = (  # the claim event the hand-over would write, already there
            "INSERT INTO noetl.event (execution_id, event_id, event_type, command_id, attempt)"
            " VALUES (%s, 1, 'command.claimed', %s, 1)"
        )
        next_command = f"{execution_id}:end"
        async with await psycopg.AsyncConnection.connect(
            str(settings.database_url), autocommit=True
        ) as db:
            await db.execute(taken, (int(execution_id), next_command))
            body = {
                "execution_id": first["execution_id"],
                "event_type": "command.completed",
                "command_id": first["command_id"],
                "attempt": first["attempt"],
                "worker_id": first["worker_id"],
                "result": 1,
            }
            for _ in range(3):  # each on a pooled connection that must be usable again
                refused = await api.post("/api/events", json=body)
                assert refused.status_code == 409, refused.text
            types = [e["event_type"] for e in await event_log(api, execution_id)]
            assert "command.completed" not in types and "step.exit" not in types
            held = (await api.get(f"/api/commands/{first['event_id']}")).json()
            assert held["status"] == "CLAIMED"
            await db.execute(
                "DELETE FROM noetl.event WHERE execution_id = %s AND event_id = 1",
                (int(execution_id),),
            )
        following = (await api.post("/api/events", json=body)).json()["next"]
        assert following["command_id"] == next_command
        await _report(api, following)
        execution = await wait_for_end(api, execution_id)
    assert execution["status"] == "COMPLETED"


LOOP = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: loop, path: tests/loop}
workflow:
  - step: start
    loop: {in: 4, iterator: i, spec: {mode: parallel, max_in_flight: 2}}
    tool: {kind: noop, result: "{{ iter.i }}"}
    next: [end]
  - {step: end, tool: {kind: noop, result: done}}
"""


def _outcomes(commands: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "events": [
            {
                "execution_id": c["execution_id"],
                "event_type": "command.completed",
                "command_id": c["command_id"],
                "attempt": c["attempt"],
                "worker_id": c["worker_id"],
                "result": c["tool"].get("result"),
            }
            for c in commands
        ]
    }


async def test_reports_answered_together_each_take_one_of_the_commands_issued(
    settings: Settings,
) -> None:
    """Two iterations reported in one request by two workers: the decision issues the two
    next iterations, and each report's answer takes one, claimed for its worker (the latest
    report first). When those two are reported together, the one step after the loop goes to
    the report that came last; the other answer has none."""
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": LOOP})).json()
        issued = [
            e["event_id"]
            for e in await event_log(api, started["execution_id"])
            if e["event_type"] == "command.issued"
        ]
        held = []
        for worker, event_id in zip(("w1", "w2"), issued, strict=True):
            claim = await api.post(
                "/api/commands/claim", json={"worker_id": worker, "event_ids": [event_id]}
            )
            held += claim.json()["claimed"]
        batch = await api.post("/api/events/batch", json=_outcomes(held))
        following = [r["body"]["next"] for r in batch.json()["results"]]
        assert [(c["iteration"], c["worker_id"]) for c in following] == [(3, "w1"), (2, "w2")]
        batch = await api.post("/api/events/batch", json=_outcomes(following))
        answers = [r["body"] for r in batch.json()["results"]]
        assert "next" not in answers[0]
        assert (answers[1]["next"]["step"], answers[1]["next"]["worker_id"]) == ("end", "w2")
        await _report(api, answers[1]["next"])
        execution = await wait_for_end(api, started["execution_id"])
        events = await event_log(api, started["execution_id"])
    assert execution["status"] == "COMPLETED" and execution["result"] == "done"
    claims = [
        (e["step"], e["attempt"], e["worker_id"])
        for e in events
        if e["event_type"] == "command.claimed"
    ]
    assert sorted(claims) == [
        ("end", 1, "w2"),
        *[("start", 1, w) for w in ("w1", "w1", "w2", "w2")],
    ]
