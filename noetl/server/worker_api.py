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
from noetl.server.records import SERVER_WORKER, Effects
from noetl.server.subplaybooks import MAX_DEPTH
from noetl.store import commands, executions

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

    # -- sub-playbooks a worker runs (a pipeline's `kind: playbook` item) ------------------

    async def _held(self, event_id: int) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            row = await commands.get_by_event(conn, event_id)
        if row is None:
            raise NotFoundError(f"command {event_id} does not exist")
        if row["status"] != CommandStatus.CLAIMED or row["lease_expired"]:
            raise ConflictError(f"command {row['command_id']} is not held by a worker")
        return row

    async def start_child(
        self,
        event_id: int,
        *,
        path: str | None,
        catalog_id: int | None,
        version: int | None,
        payload: dict[str, Any],
    ) -> int:
        """Start a child execution for a command a worker holds: its `parent_execution_id` and
        `parent_command_id` point back, so cancelling or ending the parent cancels it. A chain
        of more than MAX_DEPTH nested children is refused (a playbook calling itself)."""
        row = await self._held(event_id)
        async with self.pool.connection() as conn:
            depth = await executions.nesting(conn, row["execution_id"], MAX_DEPTH)
        if depth >= MAX_DEPTH:
            raise ConflictError(
                f"more than {MAX_DEPTH} nested sub-playbooks: a playbook calling itself?"
            )
        entry = await self.flow.playbooks.resolve(path=path, catalog_id=catalog_id, version=version)
        effects = Effects()
        async with self.flow.transaction() as conn:
            child = await self.flow.start(
                conn,
                entry,
                payload,
                effects,
                parent_execution_id=row["execution_id"],
                parent_command_id=row["command_id"],
            )
        await self.flow.after_commit(effects)
        return child

    async def _child_of(self, event_id: int, child_id: int) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            command = await commands.get_by_event(conn, event_id)
            child = await executions.get_summary(conn, child_id)
        if (
            command is None
            or child is None
            or child["parent_execution_id"] != command["execution_id"]
            or child["parent_command_id"] != command["command_id"]
        ):
            raise NotFoundError(f"execution {child_id} is not a child of command {event_id}")
        return child

    async def child(self, event_id: int, child_id: int, return_step: str | None) -> dict[str, Any]:
        """Where a child of the command stands: its status, and once it ended its result (or
        `return_step`'s) or its error."""
        child = await self._child_of(event_id, child_id)
        result = child["result"]
        if return_step and child["status"] == "COMPLETED":
            async with self.pool.connection() as conn:
                ended = await executions.get_execution(conn, child_id)
            result = ((ended or {}).get("state", {}).get("results") or {}).get(return_step)
        return {
            "execution_id": str(child_id),
            "path": child["path"],
            "status": child["status"],
            "result": result,
            "error": child["error"],
        }

    async def cancel_child(self, event_id: int, child_id: int, reason: str) -> str:
        await self._child_of(event_id, child_id)
        return await self.flow.cancel(child_id, reason)

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
            f" (last worker {row['worker_id']}): each worker running it stopped answering"
            " (it crashed, was killed, or ran out of memory)"
        )
        report = Report(
            row["execution_id"],
            row["command_id"],
            row["attempt"],
            SERVER_WORKER,
            Outcome.failure(error, error_fields={"kind": "worker_lost", "retryable": False}),
        )
        try:
            await self.flow.report(report)
        except (ConflictError, NotFoundError) as exc:  # its outcome arrived meanwhile
            log.info("command %s not failed as lost: %s", row["command_id"], exc)
            return
        log.warning("command %s failed: %s", row["command_id"], error)
