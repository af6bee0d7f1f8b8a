"""worker_lost comes only after NOETL_MAX_ATTEMPTS claims; a 409 is acked, never redelivered."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import nats
import psycopg
import pytest

from noetl.config import Settings
from noetl.embedded.runtime import running
from noetl.protocol.message import CommandMessage
from noetl.store import commands
from tests.conftest import event_log, eventually, wait_for_end

ONE_STEP = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: one, path: tests/one}
workflow:
  - step: start
    tool: {kind: noop, result: {ok: true}}
"""


async def _issued(api: httpx.AsyncClient, execution_id: str) -> dict[str, Any]:
    [issued] = [
        e for e in await event_log(api, execution_id) if e["event_type"] == "command.issued"
    ]
    return issued


def _sql(settings: Settings, sql: str, *args: Any) -> Any:
    with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
        return conn.execute(sql, args).fetchone()


async def test_a_claim_racing_the_lease_expiry_does_not_fail_the_command(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's UPDATE sees the lease live and refuses; by the time the refusal reads the
    row the lease has expired. That is attempt 1 of 3: the command must stay claimable."""
    settings = settings.with_(max_attempts=3)
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": ONE_STEP})).json()
        issued = await _issued(api, started["execution_id"])
        event_id = int(issued["event_id"])
        first = await api.post(f"/api/commands/{event_id}/claim", json={"worker_id": "w1"})
        assert first.status_code == 200 and first.json()["attempt"] == 1
        _sql(
            settings,
            "UPDATE noetl.command SET lease_until = now() + interval '1 second'"
            " WHERE event_id = %s RETURNING event_id",
            event_id,
        )
        real = commands.get_by_event

        async def after_the_lease_expired(conn: Any, wanted: int, **kwargs: Any) -> Any:
            """The refusal's read happens once the lease has run out (the race, made sure)."""

            def expired() -> Any:
                return _sql(
                    settings,
                    "SELECT 1 FROM noetl.command WHERE event_id = %s AND lease_until < now()",
                    wanted,
                )

            await eventually(lambda: asyncio.to_thread(expired))
            return await real(conn, wanted, **kwargs)

        monkeypatch.setattr(commands, "get_by_event", after_the_lease_expired)
        raced = await api.post(f"/api/commands/{event_id}/claim", json={"worker_id": "w2"})
        monkeypatch.undo()
        assert raced.status_code == 409, raced.text
        row = _sql(
            settings, "SELECT status, attempt FROM noetl.command WHERE event_id = %s", event_id
        )
        assert row == ("CLAIMED", 1)  # not FAILED as worker_lost after one attempt
        again = await api.post(f"/api/commands/{event_id}/claim", json={"worker_id": "w3"})
        assert again.status_code == 200 and again.json()["attempt"] == 2


async def test_worker_lost_only_after_max_attempts(settings: Settings) -> None:
    """Workers that claim and vanish: the command fails as worker_lost after exactly
    NOETL_MAX_ATTEMPTS claims, and not before."""
    settings = settings.with_(max_attempts=2, lease_seconds=1.0)
    async with running(settings, workers=0) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": ONE_STEP})).json()
        issued = await _issued(api, started["execution_id"])
        claims: list[int] = []

        async def claimed_again() -> bool:
            answer = await api.post(
                f"/api/commands/{issued['event_id']}/claim", json={"worker_id": "vanishing"}
            )
            if answer.status_code == 200:
                claims.append(answer.json()["attempt"])
            return len(claims) == 2

        await eventually(claimed_again, timeout=60)
        assert claims == [1, 2]
        execution = await wait_for_end(api, started["execution_id"], timeout=60)
        assert execution["status"] == "FAILED"
        assert "worker_lost: no result after 2 attempts" in execution["error"]
        kinds = [e["event_type"] for e in await event_log(api, started["execution_id"])]
        assert kinds.count("command.claimed") == 2 and kinds.count("command.failed") == 1


async def test_a_409_on_claim_is_acked_not_redelivered(settings: Settings) -> None:
    """A duplicate message of a finished command gets 409 from the claim; the worker acks it,
    so the consumer has nothing pending (a nak would keep redelivering it)."""
    async with running(settings, workers=1) as rt, httpx.AsyncClient(base_url=rt.url) as api:
        started = (await api.post("/api/execute", json={"playbook": ONE_STEP})).json()
        assert (await wait_for_end(api, started["execution_id"]))["status"] == "COMPLETED"
        issued = await _issued(api, started["execution_id"])
        nc = await nats.connect(settings.require_nats_url())
        try:
            js = nc.jetstream()
            message = CommandMessage(
                int(started["execution_id"]),
                int(issued["event_id"]),
                issued["command_id"],
                issued["step"],
                rt.url,
            )
            await js.publish(settings.subject, message.encode())

            async def settled() -> bool:
                info = await js.consumer_info(settings.stream, settings.consumer)
                return bool(info.num_ack_pending == 0 and info.num_pending == 0)

            await eventually(settled, timeout=30)
            info = await js.consumer_info(settings.stream, settings.consumer)
            assert info.num_redelivered == 0
        finally:
            await nc.close()
