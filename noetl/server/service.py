"""The orchestrator: each operation is ONE transaction under the execution's row lock.

An incoming event is appended, the engine decides, and the resulting events, commands and
projections are written in the same transaction. NATS is told only after commit; when that
fails the relay republishes later. NATS is a wake-up signal; PostgreSQL is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool

from noetl.batching import KeyedBatcher
from noetl.bus.nats_client import NATSCommandPublisher
from noetl.config import Settings
from noetl.dsl import Playbook, parse_playbook
from noetl.engine import (
    CancelRequested,
    CommandCompleted,
    CommandFailed,
    Decision,
    ExecutionState,
    Incoming,
    Started,
    decide,
    decide_all,
    give_up,
)
from noetl.errors import ConflictError, NotFoundError, RequestError
from noetl.protocol.events import CommandStatus, EventType, ExecutionStatus
from noetl.protocol.message import CommandMessage
from noetl.protocol.records import CommandRecord, EventRecord
from noetl.server import metrics, subplaybooks
from noetl.store import catalog, commands, events, executions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    """A worker's outcome for one attempt of a command."""

    execution_id: int
    command_id: str
    event_type: EventType  # command.completed | command.failed
    attempt: int
    worker_id: str
    result: Any = None
    error: str | None = None
    duration: float | None = None
    variables: dict[str, Any] = field(default_factory=dict)


SERVER_WORKER = "noetl-server"  # the claimant of the commands the server runs itself


@dataclass
class Effects:
    """What a transaction leaves to do after its commit: NATS publishes, parents to tell of
    finished sub-playbooks, children to cancel, and outcomes to report on the server's own
    commands. Done after commit; the relay repairs any of it a crash interrupts."""

    publish: list[CommandRecord] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)  # executions that reached a terminal state
    reports: list[Report] = field(default_factory=list)


class Orchestrator:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        publisher: NATSCommandPublisher,
        settings: Settings,
        new_id: Callable[[], int],
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.settings = settings
        self.new_id = new_id
        self._playbooks: dict[int, Playbook] = {}
        self._reports: KeyedBatcher[Report, dict[str, Any]] = KeyedBatcher(self._report_batch)

    # -- catalog ------------------------------------------------------------------------

    async def register(self, content: str, file: str | None = None) -> dict[str, Any]:
        playbook = parse_playbook(content, file)  # PlaybookError → 422, nothing written
        digest = hashlib.sha256(content.encode()).hexdigest()
        async with self.pool.connection() as conn:
            entry = await catalog.register(
                conn, self.new_id(), playbook.path, playbook.name, content, digest
            )
        self._playbooks.setdefault(entry["catalog_id"], playbook)
        return entry

    async def playbook(self, catalog_id: int) -> Playbook:
        cached = self._playbooks.get(catalog_id)
        if cached is None:
            async with self.pool.connection() as conn:
                entry = await catalog.get_entry(conn, catalog_id=catalog_id)
            if entry is None:
                raise NotFoundError(f"catalog entry {catalog_id} does not exist")
            cached = self._playbooks[catalog_id] = parse_playbook(entry["content"], entry["path"])
        return cached

    async def resolve(
        self,
        *,
        path: str | None = None,
        catalog_id: int | None = None,
        content: str | None = None,
        version: int | None = None,
    ) -> dict[str, Any]:
        if content is not None:
            return await self.register(content)
        async with self.pool.connection() as conn:
            if catalog_id is not None:
                entry = await catalog.get_entry(conn, catalog_id=catalog_id)
                what = f"catalog entry {catalog_id}"
            elif path is not None:
                entry = await catalog.get_entry(conn, path=path, version=version)
                what = f"playbook {path!r}" + (f" version {version}" if version else "")
            else:
                raise RequestError("give one of `path`, `catalog_id` or `playbook`")
        if entry is None:
            raise NotFoundError(f"{what} is not registered")
        return entry

    # -- executions ---------------------------------------------------------------------

    async def execute(
        self,
        entry: dict[str, Any],
        payload: dict[str, Any] | None = None,
        *,
        parent_execution_id: int | None = None,
    ) -> int:
        effects = Effects()
        async with self._transaction() as conn:
            execution_id = await self.start(
                conn, entry, payload or {}, effects, parent_execution_id=parent_execution_id
            )
        await self.after_commit(effects)
        return execution_id

    async def start(
        self,
        conn: psycopg.AsyncConnection[Any],
        entry: dict[str, Any],
        payload: dict[str, Any],
        effects: Effects,
        *,
        parent_execution_id: int | None = None,
        parent_command_id: str | None = None,
        depth: int = 0,
    ) -> int:
        """Create an execution and its first decision inside the caller's transaction."""
        playbook = await self.playbook(entry["catalog_id"])
        workload = {**playbook.workload, **payload}
        execution_id = self.new_id()
        initialized = EventRecord(
            execution_id,
            self.new_id(),
            EventType.PLAYBOOK_INITIALIZED,
            status=ExecutionStatus.RUNNING.value,
            payload={"workload": workload, "path": entry["path"], "version": entry["version"]},
            parent_execution_id=parent_execution_id,
        )
        decision = decide(
            playbook, ExecutionState(execution_id), Started(workload), new_id=self.new_id
        )
        await executions.insert_execution(
            conn,
            execution_id,
            entry["catalog_id"],
            entry["path"],
            entry["version"],
            decision.state.to_json(),
            parent_execution_id,
            parent_command_id,
        )
        await self._write(conn, decision, [initialized], effects, depth)
        metrics.EXECUTIONS_STARTED.inc()
        return execution_id

    async def cancel(self, execution_id: int, reason: str) -> str:
        effects = Effects()
        async with self._transaction() as conn:
            decision = await self._decide_locked(
                conn, execution_id, CancelRequested(reason), effects
            )
        if decision is None:
            raise ConflictError(f"execution {execution_id} has already finished")
        await self.after_commit(effects)
        return decision.state.status

    # -- the worker protocol ------------------------------------------------------------

    async def claim(self, event_id: int, worker_id: str) -> dict[str, Any]:
        """Claim a command for a new attempt; 409 while another live attempt holds it."""
        answer = (await self.claim_many([event_id], worker_id))[event_id]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def claim_many(
        self, event_ids: Sequence[int], worker_id: str
    ) -> dict[int, dict[str, Any] | Exception]:
        """Claim several commands in one statement; each gets its command or its 404/409."""
        settings = self.settings
        wanted = list(dict.fromkeys(event_ids))
        async with self.pool.connection() as conn:
            claimed = await commands.claim(
                conn,
                wanted,
                [self.new_id() for _ in wanted],
                worker_id,
                settings.lease_seconds,
                settings.max_attempts,
            )
            refused = {
                event_id: await commands.get_by_event(conn, event_id)
                for event_id in wanted
                if event_id not in claimed
            }
        answers: dict[int, dict[str, Any] | Exception] = {}
        for event_id, row in claimed.items():
            answers[event_id] = {
                **_command_view(row),
                "attempt": row["attempt"],
                "worker_id": worker_id,
                "lease_seconds": settings.lease_seconds,
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
        await self.fail_lost(event_id)
        return ConflictError(f"command {name} has no attempts left")

    async def get_command(self, event_id: int) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            row = await commands.get_by_event(conn, event_id)
        if row is None:
            raise NotFoundError(f"command {event_id} does not exist")
        return {
            **_command_view(row),
            "status": row["status"],
            "attempt": row["attempt"],
            "worker_id": row["worker_id"],
        }

    async def renew_lease(self, event_id: int, attempt: int) -> str:
        async with self.pool.connection() as conn:
            status = await commands.renew_lease(
                conn, event_id, attempt, self.settings.lease_seconds
            )
        if status is None:
            raise NotFoundError(f"command {event_id} does not exist")
        return status

    async def report(self, report: Report) -> dict[str, Any]:
        """Record a worker's outcome and decide what runs next. Reports that arrive while a
        transaction of the same execution runs are decided together in the next one."""
        return await self._reports.submit(report.execution_id, report)

    async def _report_batch(self, reports: Sequence[Report]) -> list[dict[str, Any] | Exception]:
        try:
            return await self._report_together(reports)
        except ConflictError:
            if len(reports) == 1:
                raise
        # a unique-index conflict spoiled the batch: decide each report on its own
        return [await _outcome_of(self._report_together([report])) for report in reports]

    async def _report_together(self, reports: Sequence[Report]) -> list[dict[str, Any] | Exception]:
        execution_id = reports[0].execution_id
        answers: list[dict[str, Any] | Exception] = []
        effects = Effects()
        async with self._transaction() as conn:
            execution, rows = await commands.lock_with_execution(
                conn, execution_id, [r.command_id for r in reports]
            )
            recorded: list[EventRecord] = []
            incoming: list[Incoming] = []
            settled: dict[str, list[str]] = {"COMPLETED": [], "FAILED": []}
            for report in reports:
                problem = _check_report(execution, rows.get(report.command_id), report, settled)
                answers.append(problem or {})
                if problem is None:
                    outcome, change = self._outcome(report, rows[report.command_id])
                    recorded.append(outcome)
                    incoming.append(change)
                    settled[outcome.status or ""].append(report.command_id)
            decision = None
            if recorded and execution is not None:
                decision = await self._decide_on(conn, execution, incoming, recorded, effects)
                for status, done in settled.items():
                    await commands.set_status(conn, execution_id, done, status)
        for report in reports:
            metrics.EVENTS.labels(report.event_type.value).inc()
        await self.after_commit(effects)
        status = str(decision.state.status if decision else (execution or {}).get("status"))
        issued = len(decision.commands) if decision else 0
        return [
            a if isinstance(a, Exception) else {"status": status, "issued": issued} for a in answers
        ]

    def _outcome(self, report: Report, row: dict[str, Any]) -> tuple[EventRecord, Incoming]:
        failed = report.event_type is EventType.COMMAND_FAILED
        outcome = EventRecord(
            report.execution_id,
            self.new_id(),
            report.event_type,
            step=row["step"],
            command_id=report.command_id,
            attempt=report.attempt,
            worker_id=report.worker_id,
            status=(CommandStatus.FAILED if failed else CommandStatus.COMPLETED).value,
            result=None if failed else report.result,
            error=report.error,
            duration=report.duration,
            payload={"variables": report.variables} if report.variables else None,
        )
        change: Incoming = (
            CommandFailed(report.command_id, report.error or "failed")
            if failed
            else CommandCompleted(report.command_id, report.result, report.variables)
        )
        return outcome, change

    async def fail_lost(self, event_id: int) -> None:
        """A command whose every attempt was lost fails with `worker_lost`."""
        effects = Effects()
        async with self.pool.connection() as conn, conn.transaction():
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
                self.new_id(),
                EventType.COMMAND_FAILED,
                step=row["step"],
                command_id=row["command_id"],
                attempt=row["attempt"],
                status=CommandStatus.FAILED.value,
                error=error,
            )
            await self._decide_on(
                conn, execution, [CommandFailed(row["command_id"], error)], [outcome], effects
            )
            await commands.set_status(
                conn, row["execution_id"], [row["command_id"]], CommandStatus.FAILED.value
            )
        log.warning("command %s failed: %s", row["command_id"], error)
        await self.after_commit(effects)

    # -- shared steps -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A transaction in pipeline mode: reads sync when fetched, writes go with COMMIT.

        A unique-index conflict at commit means another request recorded the same outcome
        first: that is a 409, and nothing of this transaction is kept.
        """
        try:
            async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
                yield conn
        except psycopg.errors.UniqueViolation as exc:
            raise ConflictError(f"already recorded: {exc.diag.constraint_name}") from None

    async def _decide_locked(
        self,
        conn: psycopg.AsyncConnection[Any],
        execution_id: int,
        incoming: Incoming,
        effects: Effects,
    ) -> Decision | None:
        execution = await executions.lock_execution(conn, execution_id)
        if execution is None:
            raise NotFoundError(f"execution {execution_id} does not exist")
        return await self._decide_on(conn, execution, [incoming], [], effects)

    async def _decide_on(
        self,
        conn: psycopg.AsyncConnection[Any],
        execution: dict[str, Any],
        incoming: Sequence[Incoming],
        recorded: Sequence[EventRecord],
        effects: Effects,
    ) -> Decision | None:
        """Append `recorded`, run the engine unless the execution has ended, write it all."""
        if execution["status"] != ExecutionStatus.RUNNING:
            await events.insert_events(conn, recorded)
            return None
        playbook = await self.playbook(execution["catalog_id"])
        state = ExecutionState.from_json(execution["state"])
        try:
            decision = decide_all(playbook, state, incoming, new_id=self.new_id)
        except Exception as exc:  # an engine bug must not leave the execution RUNNING forever
            log.exception("engine failed on execution %s", state.execution_id)
            error = f"internal error in the engine: {type(exc).__name__}: {exc}"
            for change in incoming:  # their outcomes are recorded: nothing left to cancel
                if isinstance(change, CommandCompleted | CommandFailed):
                    state.commands.pop(change.command_id, None)
            decision = give_up(playbook, state, error, new_id=self.new_id)
        await self._write(conn, decision, recorded, effects)
        return decision

    async def _write(
        self,
        conn: psycopg.AsyncConnection[Any],
        decision: Decision,
        recorded: Sequence[EventRecord],
        effects: Effects,
        depth: int = 0,
    ) -> None:
        state = decision.state
        await events.insert_events(conn, [*recorded, *decision.events])
        await commands.insert_commands(conn, decision.commands)
        await commands.set_status(
            conn, state.execution_id, decision.cancelled, CommandStatus.CANCELLED.value
        )
        await executions.save_state(
            conn, state.execution_id, state.to_json(), state.status, state.result, state.error
        )
        cancelled = set(decision.cancelled)
        for command in decision.commands:
            if command.command_id in cancelled:
                continue
            if command.tool.get("kind") == "playbook":
                await subplaybooks.start_child(self, conn, command, effects, depth)
            else:
                effects.publish.append(command)
        metrics.COMMANDS_ISSUED.inc(len(decision.commands))
        if decision.finished:
            effects.finished.append(state.execution_id)
            metrics.EXECUTIONS_FINISHED.labels(state.status).inc()
            log.info(
                "execution %s %s%s",
                state.execution_id,
                state.status,
                f": {state.error}" if state.error else "",
            )

    async def after_commit(self, effects: Effects) -> None:
        """Publish, then tell parents and children; each failure is left to the relay."""
        await self.publish(effects.publish)
        for execution_id in effects.finished:
            await subplaybooks.settle(self, execution_id)
        for report in effects.reports:
            try:
                await self.report(report)
            except (ConflictError, NotFoundError) as exc:
                log.info("outcome of %s not recorded: %s", report.command_id, exc)

    async def publish(self, issued: Sequence[CommandRecord]) -> int:
        """Tell the workers, all at once; a failure is logged and left to the relay."""
        if not issued:
            return 0
        outcomes = await asyncio.gather(
            *(
                self.publisher.publish(
                    CommandMessage(
                        command.execution_id,
                        command.event_id,
                        command.command_id,
                        command.step,
                        self.settings.server_url,
                    ),
                    f"{command.event_id}:1",
                )
                for command in issued
            ),
            return_exceptions=True,
        )
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            log.warning("%d publish(es) deferred to the relay: %s", len(failed), failed[0])
            metrics.PUBLISH_FAILURES.inc(len(failed))
        return len(outcomes) - len(failed)


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
    answer: Awaitable[list[dict[str, Any] | Exception]],
) -> dict[str, Any] | Exception:
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
