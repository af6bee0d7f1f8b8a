"""The worker protocol on the server side: claims, leases, outcomes, lost workers.

Claims of a fetched batch are one statement; outcomes of one execution that arrive while its
transaction runs are decided together in the next one (one lock, one state write).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from noetl.batching import KeyedBatcher
from noetl.engine import CommandCompleted, CommandFailed, Incoming
from noetl.errors import ConflictError, NotFoundError
from noetl.protocol.command import ClaimedCommand, LeaseReply
from noetl.protocol.events import CommandStatus, EventType, ExecutionStatus
from noetl.protocol.outcome import Report, ReportReply
from noetl.protocol.records import EventRecord
from noetl.server import metrics
from noetl.server.records import Effects
from noetl.store import commands, executions

if TYPE_CHECKING:
    from noetl.server.service import Orchestrator

log = logging.getLogger(__name__)


class WorkerAPI:
    def __init__(self, server: Orchestrator) -> None:
        self.server = server
        self._reports: KeyedBatcher[Report, ReportReply] = KeyedBatcher(self._report_batch)

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
        settings = self.server.settings
        wanted = list(dict.fromkeys(event_ids))
        async with self.server.pool.connection() as conn:
            claimed = await commands.claim(
                conn,
                wanted,
                [self.server.new_id() for _ in wanted],
                worker_id,
                settings.lease_seconds,
                settings.max_attempts,
            )
            refused = {
                event_id: await commands.get_by_event(conn, event_id)
                for event_id in wanted
                if event_id not in claimed
            }
        answers: dict[int, ClaimedCommand | Exception] = {}
        for event_id, row in claimed.items():
            answers[event_id] = ClaimedCommand(
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
        await self.fail_lost(event_id)
        return ConflictError(f"command {name} has no attempts left")

    async def get_command(self, event_id: int) -> dict[str, Any]:
        async with self.server.pool.connection() as conn:
            row = await commands.get_by_event(conn, event_id)
        if row is None:
            raise NotFoundError(f"command {event_id} does not exist")
        return {
            **_command_view(row),
            "status": row["status"],
            "attempt": row["attempt"],
            "worker_id": row["worker_id"],
        }

    async def renew_lease(self, event_id: int, attempt: int) -> LeaseReply:
        async with self.server.pool.connection() as conn:
            reply = await commands.renew_lease(
                conn, event_id, attempt, self.server.settings.lease_seconds
            )
        if reply is None:
            raise NotFoundError(f"command {event_id} does not exist")
        return reply

    async def report(self, report: Report) -> ReportReply:
        """Record a worker's outcome and decide what runs next. Reports that arrive while a
        transaction of the same execution runs are decided together in the next one."""
        return await self._reports.submit(report.execution_id, report)

    async def _report_batch(self, reports: Sequence[Report]) -> list[ReportReply | Exception]:
        try:
            return await self._report_together(reports)
        except ConflictError:
            if len(reports) == 1:
                raise
        # a unique-index conflict spoiled the batch: decide each report on its own
        return [await _outcome_of(self._report_together([report])) for report in reports]

    async def _report_together(self, reports: Sequence[Report]) -> list[ReportReply | Exception]:
        execution_id = reports[0].execution_id
        answers: list[ReportReply | Exception] = []
        effects = Effects()
        async with self.server.transaction() as conn:
            execution, rows = await commands.lock_with_execution(
                conn, execution_id, [r.command_id for r in reports]
            )
            recorded: list[EventRecord] = []
            incoming: list[Incoming] = []
            settled: dict[str, list[str]] = {"COMPLETED": [], "FAILED": []}
            for report in reports:
                problem = _check_report(execution, rows.get(report.command_id), report, settled)
                answers.append(problem or ReportReply(ExecutionStatus.RUNNING))
                if problem is None:
                    outcome, change = self._outcome(report, rows[report.command_id])
                    recorded.append(outcome)
                    incoming.append(change)
                    settled[outcome.status or ""].append(report.command_id)
            decision = None
            if recorded and execution is not None:
                decision = await self.server.decide_on(conn, execution, incoming, recorded, effects)
                for status, done in settled.items():
                    await commands.set_status(conn, execution_id, done, status)
        for report in reports:
            metrics.EVENTS.labels(report.event_type.value).inc()
        await self.server.after_commit(effects)
        status = ExecutionStatus(
            decision.state.status if decision else (execution or {}).get("status", "RUNNING")
        )
        issued = len(decision.commands) if decision else 0
        return [a if isinstance(a, Exception) else ReportReply(status, issued) for a in answers]

    def _outcome(self, report: Report, row: dict[str, Any]) -> tuple[EventRecord, Incoming]:
        outcome = report.outcome
        extra: dict[str, Any] = {}
        if outcome.variables:
            extra["variables"] = dict(outcome.variables)
        if outcome.problems:
            extra["problems"] = list(outcome.problems)
        event = EventRecord(
            report.execution_id,
            self.server.new_id(),
            outcome.event_type,
            step=row["step"],
            command_id=report.command_id,
            attempt=report.attempt,
            worker_id=report.worker_id,
            status=outcome.status.value,
            result=outcome.result if outcome.ok else None,
            error=outcome.error,
            duration=outcome.duration,
            payload=extra or None,
        )
        change: Incoming = (
            CommandCompleted(report.command_id, outcome.result, outcome.variables, outcome.problems)
            if outcome.ok
            else CommandFailed(report.command_id, outcome.error or "failed")
        )
        return event, change

    async def fail_lost(self, event_id: int) -> None:
        """A command whose every attempt was lost fails with `worker_lost`."""
        effects = Effects()
        async with self.server.pool.connection() as conn, conn.transaction():
            probe = await commands.get_by_event(conn, event_id)
            if probe is None:
                return
            execution = await executions.lock_execution(conn, probe["execution_id"])
            row = await commands.get_by_event(conn, event_id, lock=True)
            if execution is None or row is None or row["status"] != CommandStatus.CLAIMED:
                return
            error = (
                f"worker_lost: no result after {row['attempt']} attempts"
                f" (last worker {row['worker_id']})"
            )
            outcome = EventRecord(
                row["execution_id"],
                self.server.new_id(),
                EventType.COMMAND_FAILED,
                step=row["step"],
                command_id=row["command_id"],
                attempt=row["attempt"],
                status=CommandStatus.FAILED.value,
                error=error,
            )
            await self.server.decide_on(
                conn, execution, [CommandFailed(row["command_id"], error)], [outcome], effects
            )
            await commands.set_status(
                conn, row["execution_id"], [row["command_id"]], CommandStatus.FAILED.value
            )
        log.warning("command %s failed: %s", row["command_id"], error)
        await self.server.after_commit(effects)


def _check_report(
    execution: dict[str, Any] | None,
    row: dict[str, Any] | None,
    report: Report,
    settled: dict[str, list[str]],
) -> Exception | None:
    """Why a report cannot be recorded (404 or 409), or None when it can."""
    if execution is None:
        return NotFoundError(f"execution {report.execution_id} does not exist")
    if row is None:
        return NotFoundError(f"command {report.command_id} does not exist")
    status = CommandStatus(row["status"])
    if status.terminal or any(report.command_id in done for done in settled.values()):
        shown = status.value if status.terminal else "reported"
        return ConflictError(f"command {report.command_id} is already {shown}")
    if status is not CommandStatus.CLAIMED or row["attempt"] != report.attempt:
        return ConflictError(
            f"attempt {report.attempt} of {report.command_id} is stale"
            f" (current attempt {row['attempt']})"
        )
    return None


async def _outcome_of(
    answer: Awaitable[list[ReportReply | Exception]],
) -> ReportReply | Exception:
    try:
        return (await answer)[0]
    except (ConflictError, NotFoundError) as exc:
        return exc


def _command_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "execution_id": str(row["execution_id"]),
        "event_id": str(row["event_id"]),
        "command_id": row["command_id"],
        "step": row["step"],
        "iteration": row["iteration"],
        "tool": row["tool"],
        "input": row["input"],
    }
