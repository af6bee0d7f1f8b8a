"""The lease keepalive (`middleware.LeaseKeepalive`): the work runs in the command's own task,
renewals start from a timer, and a renewal answered with stop ends the work."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from noetl.protocol.command import ClaimedCommand
from noetl.protocol.outcome import Outcome
from noetl.worker.client import Response, ServerClient, ServerUnreachable
from noetl.worker.middleware import Job, LeaseKeepalive, process


class LeaseClient(ServerClient):
    """Answers lease renewals with the statuses given, in turn (no server is touched)."""

    def __init__(self, *answers: int | str, delay: float = 0.0) -> None:
        super().__init__("http://unused")
        self.answers = list(answers)
        self.delay = delay
        self.renewals = 0

    async def renew_lease(self, event_id: int, attempt: int) -> Response:
        self.renewals += 1
        await asyncio.sleep(self.delay)
        answer = self.answers.pop(0) if self.answers else 200
        if answer == "down":
            raise ServerUnreachable("down")
        assert isinstance(answer, int)
        body: dict[str, Any] = {"status": "CLAIMED" if answer == 200 else "CANCELLED"}
        return Response(answer, body)


def _job() -> Job:
    return Job(ClaimedCommand(1, 2, "1:s", "s", {"kind": "x"}, {}, 1, "w"))


def sleeping(seconds: float, ended: list[str] | None = None) -> Any:
    async def actor(job: Job) -> Outcome:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            if ended is not None:
                ended.append("cancelled")
            raise
        return Outcome.success(seconds)

    return actor


async def test_a_command_shorter_than_the_interval_is_never_renewed() -> None:
    client = LeaseClient()
    outcome = await process([LeaseKeepalive(client, 0.5)], _job(), sleeping(0.01))
    assert outcome is not None and outcome.result == 0.01
    assert client.renewals == 0


async def test_a_long_command_is_renewed_while_it_runs_and_keeps_its_outcome() -> None:
    client = LeaseClient(200, "down", 500, 200)
    outcome = await process([LeaseKeepalive(client, 0.05)], _job(), sleeping(0.4))
    assert outcome is not None and outcome.result == 0.4
    assert client.renewals >= 4


async def test_a_renewal_answered_with_stop_cancels_the_work_and_nothing_is_reported() -> None:
    client = LeaseClient(200, 409)
    ended: list[str] = []
    task = asyncio.create_task(process([LeaseKeepalive(client, 0.05)], _job(), sleeping(30, ended)))
    assert await asyncio.wait_for(task, 10) is None
    assert ended == ["cancelled"]
    assert client.renewals == 2
    assert task.cancelling() == 0  # the task is not left cancelled: the worker goes on
    await asyncio.sleep(0)


async def test_a_renewal_under_way_when_the_work_ends_still_decides() -> None:
    client = LeaseClient(409, delay=0.2)  # asked at 0.05 s, answers at 0.25 s
    outcome = await process([LeaseKeepalive(client, 0.05)], _job(), sleeping(0.1))
    assert outcome is None
    client = LeaseClient(200, delay=0.2)
    outcome = await process([LeaseKeepalive(client, 0.05)], _job(), sleeping(0.1))
    assert outcome is not None and outcome.result == 0.1


async def test_work_that_swallows_the_cancellation_still_reports_nothing() -> None:
    client = LeaseClient(409)

    async def stubborn(job: Job) -> Outcome:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return Outcome.success("kept going")

    async def then_sleep() -> Outcome | None:
        outcome = await process([LeaseKeepalive(client, 0.05)], _job(), stubborn)
        await asyncio.sleep(0.01)  # not cancelled again
        return outcome

    assert await asyncio.wait_for(then_sleep(), 10) is None


async def test_a_cancellation_from_outside_is_not_swallowed() -> None:
    client = LeaseClient()
    task = asyncio.create_task(process([LeaseKeepalive(client, 0.05)], _job(), sleeping(30)))
    await asyncio.sleep(0.12)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the cancellation was swallowed")
    assert task.cancelled()
