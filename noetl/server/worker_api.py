"""The worker protocol on the server side: claims, leases, commands, lost workers.

Claims of a fetched batch are one statement. Outcomes are recorded by `Flow.report` (the one
write path); a command whose every attempt was lost is one more such outcome, `worker_lost`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from noetl.errors import ConflictError, NotFoundError
from noetl.protocol.command import ClaimedCommand, LeaseReply
from noetl.protocol.events import CommandStatus, EventType
from noetl.protocol.outcome import Outcome, Report
from noetl.server import metrics
from noetl.server.flow import Flow
from noetl.server.records import SERVER_WORKER
from noetl.store import commands

log = logging.getLogger(__name__)


class WorkerAPI:
    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.pool = flow.pool
        self.settings = flow.settings

    async def claim(self, event_id: int, worker_id: str) -> ClaimedCommand:
        """Claim a command for a new attempt; 409 while another live attempt holds it."""
        answer = (await self.claim_many([event_id], worker_id))[event_id]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def claim_many(
        self, event_ids: Sequence[int], worker_id: str
    ) -> dict[int, ClaimedCommand | Exception]:
        """Claim several commands in one statement; each gets its command or its 404/409."""
        settings = self.settings
        wanted = list(dict.fromkeys(event_ids))
        async with self.pool.connection() as conn:
            claimed = await commands.claim(
                conn,
                wanted,
                [self.flow.new_id() for _ in wanted],
                worker_id,
                settings.lease_seconds,
                settings.max_attempts,
            )
            refused = {
                event_id: await commands.get_by_event(conn, event_id)
                for event_id in wanted
                if event_id not in claimed
            }
        answers: dict[int, ClaimedCommand | Exception] = {
            event_id: ClaimedCommand(
                execution_id=row["execution_id"],
                event_id=row["event_id"],
                command_id=row["command_id"],
                step=row["step"],
                tool=row["tool"],
                input=row["input"],
                attempt=row["attempt"],
                worker_id=worker_id,
                iteration=row["iteration"],
                lease_seconds=settings.lease_seconds,
            )
            for event_id, row in claimed.items()
        }
        for event_id, found in refused.items():
            answers[event_id] = await self._refusal(event_id, found)
        metrics.EVENTS.labels(EventType.COMMAND_CLAIMED.value).inc(len(claimed))
        return answers

    async def _refusal(self, event_id: int, row: dict[str, Any] | None) -> Exception:
        """Why a command could not be claimed; a command out of attempts fails here."""
        if row is None:
            return NotFoundError(f"command {event_id} does not exist")
        status = CommandStatus(row["status"])
        name = row["command_id"]
        if status.terminal:
            return ConflictError(f"command {name} is already {status.value}")
        if status is CommandStatus.CLAIMED and not row["lease_expired"]:
            return ConflictError(
                f"command {name} is claimed by {row['worker_id']} (attempt {row['attempt']})"
            )
        if row["attempt"] < self.settings.max_attempts:
            # the claim raced the lease: live when the claim looked, expired by now; the
            # relay republishes it and the next claim gets the next attempt
            return ConflictError(f"command {name}: its lease just expired; claim it again")
        await self.fail_lost(event_id)
        return ConflictError(f"command {name} has no attempts left")

    async def get_command(self, event_id: int) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            row = await commands.get_by_event(conn, event_id)
        if row is None:
            raise NotFoundError(f"command {event_id} does not exist")
        return {
            "execution_id": str(row["execution_id"]),
            "event_id": str(row["event_id"]),
            "command_id": row["command_id"],
            "step": row["step"],
            "iteration": row["iteration"],
            "tool": row["tool"],
            "input": row["input"],
            "status": row["status"],
            "attempt": row["attempt"],
            "worker_id": row["worker_id"],
        }

    async def renew_lease(self, event_id: int, attempt: int) -> LeaseReply:
        async with self.pool.connection() as conn:
            reply = await commands.renew_lease(conn, event_id, attempt, self.settings.lease_seconds)
        if reply is None:
            raise NotFoundError(f"command {event_id} does not exist")
        return reply

    async def fail_lost(self, event_id: int) -> None:
        """A command whose every attempt was lost fails with `worker_lost`, recorded by the
        server as the outcome of its last attempt."""
        async with self.pool.connection() as conn:
            row = await commands.get_by_event(conn, event_id)
        if row is None or row["status"] != CommandStatus.CLAIMED:
            return
        error = (
            f"worker_lost: no result after {row['attempt']} attempts"
            f" (last worker {row['worker_id']})"
        )
        report = Report(
            row["execution_id"],
            row["command_id"],
            row["attempt"],
            SERVER_WORKER,
            Outcome.failure(error),
        )
        try:
            await self.flow.report(report)
        except (ConflictError, NotFoundError) as exc:  # its outcome arrived meanwhile
            log.info("command %s not failed as lost: %s", row["command_id"], exc)
            return
        log.warning("command %s failed: %s", row["command_id"], error)
