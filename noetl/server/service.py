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
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool

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
    give_up,
)
from noetl.errors import ConflictError, NotFoundError, RequestError
from noetl.protocol.events import CommandStatus, EventType, ExecutionStatus
from noetl.protocol.message import CommandMessage
from noetl.protocol.outcome import Report, ReportReply
from noetl.protocol.records import CommandRecord, EventRecord
from noetl.server import metrics, subplaybooks
from noetl.server.loop_data import LoopDataLoader
from noetl.server.records import Effects
from noetl.server.worker_api import WorkerAPI
from noetl.store import catalog, commands, events, executions

log = logging.getLogger(__name__)

PLAYBOOK_CACHE = 512  # parsed playbooks kept per server process


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
        self._playbooks: OrderedDict[int, Playbook] = OrderedDict()  # parsed, most recent last
        self.workers = WorkerAPI(self)
        self.loop_data = LoopDataLoader()

    # -- catalog ------------------------------------------------------------------------

    async def register(self, content: str, file: str | None = None) -> dict[str, Any]:
        playbook = parse_playbook(content, file)  # PlaybookError → 422, nothing written
        digest = hashlib.sha256(content.encode()).hexdigest()
        async with self.pool.connection() as conn:
            entry = await catalog.register(
                conn, self.new_id(), playbook.path, playbook.name, content, digest
            )
        self._remember(entry["catalog_id"], playbook)
        return entry

    def _remember(self, catalog_id: int, playbook: Playbook) -> None:
        self._playbooks[catalog_id] = playbook
        self._playbooks.move_to_end(catalog_id)
        while len(self._playbooks) > PLAYBOOK_CACHE:
            self._playbooks.popitem(last=False)

    async def playbook(self, catalog_id: int) -> Playbook:
        """The parsed playbook of a catalog entry (immutable, so parsed once per process)."""
        cached = self._playbooks.get(catalog_id)
        if cached is None:
            async with self.pool.connection() as conn:
                entry = await catalog.get_entry(conn, catalog_id=catalog_id)
            if entry is None:
                raise NotFoundError(f"catalog entry {catalog_id} does not exist")
            cached = parse_playbook(entry["content"], entry["path"])
        self._remember(catalog_id, cached)
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
        async with self.transaction() as conn:
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
        async with self.transaction() as conn:
            decision = await self._decide_locked(
                conn, execution_id, CancelRequested(reason), effects
            )
        if decision is None:
            raise ConflictError(f"execution {execution_id} has already finished")
        await self.after_commit(effects)
        return decision.state.status

    # -- the worker protocol ------------------------------------------------------------

    async def report(self, report: Report) -> ReportReply:
        """Record a worker's (or the server's own) outcome; see `WorkerAPI.report`."""
        return await self.workers.report(report)

    # -- shared steps -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
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
        return await self.decide_on(conn, execution, [incoming], [], effects)

    async def decide_on(
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
            decision = await self.loop_data.decide(conn, playbook, state, incoming, self.new_id)
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
