"""The one write path: append → decide → write → after commit.

Every change to an execution goes through here: starting it (`execute`, `start`), recording
an outcome (`report`, from a worker, the server's own sub-playbook commands or the reaper),
cancelling it (`cancel`). Each is ONE transaction under the execution's row lock: the incoming
events are appended, the engine decides, and the decision's events, commands and state
snapshot are written with them (`_decide`). Commands of `kind: playbook` start their child
execution inside the same transaction. After commit, `after_commit` publishes the new commands
to NATS and settles sub-playbooks, which comes back here as reports and cancels. A crash
between commit and after-commit is repaired by the relay; NATS is a wake-up signal only.

Outcomes are batched in one place: reports of one execution that arrive while its transaction
runs are decided together in the next one (one lock, one state write), however they arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool

from noetl.batching import KeyedBatcher
from noetl.bus.nats_client import NATSCommandPublisher
from noetl.config import Settings
from noetl.engine import (
    CancelRequested,
    CommandCompleted,
    CommandFailed,
    Decision,
    ExecutionState,
    Incoming,
    Started,
    decide_all,
    give_up,
)
from noetl.engine.rerun import RerunPlan
from noetl.errors import ConflictError, LoopDataMissing, NoetlError, NotFoundError
from noetl.protocol.command import ClaimedCommand
from noetl.protocol.events import CommandStatus, EventType, ExecutionStatus
from noetl.protocol.message import CommandMessage
from noetl.protocol.outcome import Outcome, Report, ReportReply, Retry
from noetl.protocol.records import CommandRecord, EventRecord
from noetl.server import metrics, snapshots, subplaybooks
from noetl.server.loop_data import LoopDataLoader
from noetl.server.playbooks import Playbooks
from noetl.server.records import SERVER_WORKER, Effects
from noetl.server.snapshots import Snapshots
from noetl.server.states import Held, States
from noetl.store import commands, decisions, events, executions

log = logging.getLogger(__name__)


class Flow:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        publisher: NATSCommandPublisher,
        settings: Settings,
        new_id: Callable[[], int],
        playbooks: Playbooks,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.settings = settings
        self.new_id = new_id
        self.playbooks = playbooks
        self.loop_data = LoopDataLoader()
        self.states = States()  # the snapshots this process wrote last
        self.snapshots = Snapshots()  # which large results they keep in the log
        self._reports: KeyedBatcher[Report, ReportReply] = KeyedBatcher(self._report_batch)
        self._starts: KeyedBatcher[_First, int] = KeyedBatcher(self._start_batch)
        self._own_reports: set[asyncio.Task[None]] = set()  # see after_commit

    # -- the operations ---------------------------------------------------------------------

    async def execute(
        self,
        entry: dict[str, Any],
        payload: dict[str, Any] | None = None,
        *,
        parent_execution_id: int | None = None,
        timeout_seconds: float | None = None,
    ) -> int:
        """Start an execution; `timeout_seconds`: still running after it, the relay cancels
        it. Executions started at the same time are written together (`_start_batch`); one
        whose first step starts a sub-playbook has a transaction of its own."""
        first = await self._first(
            entry,
            payload or {},
            parent_execution_id=parent_execution_id,
            timeout_seconds=timeout_seconds,
        )
        if not _starts_child(first.decision):
            return await self._starts.submit(None, first)
        effects = Effects()
        async with self.transaction() as conn:
            await self._insert(conn, first, effects, 0)
        await self.after_commit(effects)
        return first.execution_id

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
        rerun: tuple[int, RerunPlan] | None = None,
        timeout_seconds: float | None = None,
    ) -> int:
        """Create an execution and its first decision inside the caller's transaction.
        `rerun`: the execution this one re-runs and what it reuses of it; `timeout_seconds`:
        its time limit (the relay cancels it past its deadline)."""
        first = await self._first(
            entry,
            payload,
            parent_execution_id=parent_execution_id,
            parent_command_id=parent_command_id,
            rerun=rerun,
            timeout_seconds=timeout_seconds,
        )
        await self._insert(conn, first, effects, depth)
        return first.execution_id

    async def _first(
        self,
        entry: dict[str, Any],
        payload: dict[str, Any],
        *,
        parent_execution_id: int | None = None,
        parent_command_id: str | None = None,
        rerun: tuple[int, RerunPlan] | None = None,
        timeout_seconds: float | None = None,
    ) -> _First:
        """A new execution's `playbook.initialized` event, first decision and snapshot,
        before anything is written."""
        playbook = await self.playbooks.playbook(entry["catalog_id"])
        workload = {**playbook.workload, **payload}
        execution_id = self.new_id()
        started_at = datetime.now(UTC).isoformat()  # the engine's `now()` (templates)
        started = {
            "workload": workload,
            "path": entry["path"],
            "version": entry["version"],
            "started_at": started_at,
        }
        if rerun is not None:
            started["rerun"] = {"of": str(rerun[0]), **rerun[1].to_json()}
        initialized = EventRecord(
            execution_id,
            self.new_id(),
            EventType.PLAYBOOK_INITIALIZED,
            status=ExecutionStatus.RUNNING.value,
            payload=started,
            parent_execution_id=parent_execution_id,
        )
        reuse = rerun[1].reuse if rerun is not None else {}
        decision = decide_all(
            playbook,
            ExecutionState(execution_id),
            [Started(workload, reuse, started_at)],
            new_id=self.new_id,
        )
        if decision.needs:  # a first decision has all its loop data in hand
            raise ConflictError(f"execution {execution_id} cannot start: {decision.needs}")
        return _First(
            entry,
            initialized,
            decision,
            self.snapshots.snapshot(decision, [initialized]),
            parent_execution_id,
            parent_command_id,
            rerun[0] if rerun is not None else None,
            timeout_seconds,
        )

    async def _insert(
        self, conn: psycopg.AsyncConnection[Any], first: _First, effects: Effects, depth: int
    ) -> None:
        """`first`'s row (once, with its first snapshot) and writes inside the caller's
        transaction (its sub-playbooks start in it too)."""
        await executions.insert_started(conn, [first.row()])
        await self._write(conn, first.decision, [first.initialized], effects, depth, held=True)
        metrics.EXECUTIONS_STARTED.inc()

    async def _start_batch(self, firsts: Sequence[_First]) -> list[int | Exception]:
        """Top-level executions started at the same time, written in ONE transaction and
        round trip (`decisions.commit_started`): one commit for all, and each row inserted
        once with its first snapshot. The server holds each snapshot (`self.states`), so the
        first outcome of each is decided from it. A batch that fails is written again one
        execution at a time, so one bad start answers for itself only."""
        effects = Effects()
        rows, last = [], []
        for first in firsts:  # the snapshot goes with the row, not with the writes
            writes, _ = self._stage(
                first.decision, [first.initialized], effects, None, (), held=True
            )
            if writes is not None:
                last.append(writes)
            rows.append(first.row())
        try:
            async with self.pool.connection() as conn, _rolled_back_on_error(conn):
                await decisions.commit_started(conn, rows, last)
        except (psycopg.Error, NoetlError) as exc:
            if len(firsts) == 1:
                return [exc]
            answers: list[int | Exception] = []
            for first in firsts:
                answers += await self._start_batch([first])
            return answers
        metrics.EXECUTIONS_STARTED.inc(len(firsts))
        for first in firsts:
            state = first.decision.state
            if state.status == ExecutionStatus.RUNNING:  # its row is at version 1
                self.states.put(state.execution_id, Held(1, state, first.entry["catalog_id"]))
        await self.after_commit(effects)
        return [first.execution_id for first in firsts]

    async def cancel(self, execution_id: int, reason: str) -> str:
        effects = Effects()
        try:
            async with self.transaction() as conn:
                execution = await executions.lock_execution(conn, execution_id)
                if execution is None:
                    raise NotFoundError(f"execution {execution_id} does not exist")
                decision = await self._decide(
                    conn, execution, [CancelRequested(reason)], [], effects
                )
        except (ConflictError, NotFoundError):
            raise
        except Exception as exc:  # its playbook or state cannot be processed: cancel anyway
            log.exception("execution %s: cancelling without the engine", execution_id)
            async with self.pool.connection() as conn, conn.transaction():
                ended = await executions.quarantine(
                    conn,
                    execution_id,
                    self.new_id(),
                    f"{reason} (without the engine: {type(exc).__name__}: {exc})"[:2000],
                    ExecutionStatus.CANCELLED.value,
                )
            if not ended:
                raise ConflictError(f"execution {execution_id} has already finished") from None
            return ExecutionStatus.CANCELLED.value
        if decision is None:
            raise ConflictError(f"execution {execution_id} has already finished")
        await self.after_commit(effects)
        return decision.state.status

    async def report(self, report: Report) -> ReportReply:
        """Record an outcome and decide what runs next; 404/409 as NotFound/ConflictError."""
        return await self._reports.submit(report.execution_id, report)

    async def report_all(self, reports: Sequence[Report]) -> list[ReportReply | Exception]:
        """Several outcomes (of any executions) at once; each answered as `report` would."""
        if len(reports) == 1:  # one outcome (each step of a chain): no task to gather it
            try:
                return [await self.report(reports[0])]
            except NoetlError as exc:
                return [exc]
        answers = await asyncio.gather(
            *(self.report(report) for report in reports), return_exceptions=True
        )
        replies: list[ReportReply | Exception] = []
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, NoetlError):
                raise answer
            replies.append(answer)
        return replies

    async def retrying(self, event_id: int, attempt: int, worker_id: str, retry: Retry) -> None:
        """Record a policy retry of a running attempt as it happens (`command.retrying`), under
        the execution's lock like every write, so it comes before the attempt's outcome in the
        log. Nothing is decided: a retry happens inside the command. 404 for an unknown
        command, 409 when that attempt no longer runs."""
        async with self.pool.connection() as conn:
            row = await commands.get_by_event(conn, event_id)
        if row is None:
            raise NotFoundError(f"command {event_id} does not exist")
        execution_id, command_id = row["execution_id"], row["command_id"]
        async with self.pool.connection() as conn, _rolled_back_on_error(conn):
            _, rows = await commands.begin_locked(conn, execution_id, [command_id])
            current = rows.get(command_id)
            if current is None or current["status"] != CommandStatus.CLAIMED.value:
                raise ConflictError(f"command {command_id} is not running")
            if current["attempt"] != attempt:
                raise ConflictError(f"attempt {attempt} of {command_id} is stale")
            event = EventRecord(
                execution_id,
                self.new_id(),
                EventType.COMMAND_RETRYING,
                step=row["step"],
                command_id=command_id,
                attempt=attempt,
                worker_id=worker_id,
                error=retry.error,
                payload=retry.to_json(),
            )
            writes = decisions.statement(execution_id, events=[event])
            await decisions.commit(conn, [writes] if writes else [])
        metrics.EVENTS.labels(EventType.COMMAND_RETRYING.value).inc()

    # -- outcomes -------------------------------------------------------------------------

    async def _report_batch(self, reports: Sequence[Report]) -> list[ReportReply | Exception]:
        try:
            return await self._report_together(reports)
        except ConflictError:
            if len(reports) == 1:
                raise
        # a unique-index conflict spoiled the batch: decide each report on its own
        answers: list[ReportReply | Exception] = []
        for report in reports:
            try:
                answers += await self._report_together([report])
            except (ConflictError, NotFoundError) as exc:
                answers.append(exc)
        return answers

    async def _report_together(self, reports: Sequence[Report]) -> list[ReportReply | Exception]:
        execution_id = reports[0].execution_id
        held = self.states.get(execution_id)
        if held is not None:
            replies = await self._report_held(reports, held)
            if replies is not None:
                return replies
        answers: list[Exception | None] = []
        effects = Effects()
        decision = None
        last: list[tuple[str, list[Any]]] = []  # the writes that go with COMMIT
        async with self.pool.connection() as conn, _rolled_back_on_error(conn):
            execution, rows = await commands.begin_locked(
                conn,
                execution_id,
                [r.command_id for r in reports],
                held.version if held else -1,
            )
            steps: list[str | None] = []
            done: set[str] = set()
            for report in reports:
                problem = _check(execution, rows.get(report.command_id), report, done)
                answers.append(problem)
                steps.append(None if problem else rows[report.command_id]["step"])
                if problem is None:
                    done.add(report.command_id)
            outcomes = self._outcomes(reports, steps)
            if outcomes.recorded and execution is not None:
                decision = await self._decide(
                    conn,
                    execution,
                    outcomes.incoming,
                    outcomes.recorded,
                    effects,
                    settled=outcomes.settled,
                    hand_to=outcomes.hand_to,
                    last=last,
                    held=held,
                )
            await decisions.commit(conn, last)
        if decision is not None and execution is not None:  # committed: its write added one
            version = execution["state_version"] + 1
            self.states.put(execution_id, Held(version, decision.state, execution["catalog_id"]))
        status = decision.state.status if decision else (execution or {}).get("status", "RUNNING")
        return await self._answer(reports, answers, decision, status, effects)

    async def _report_held(
        self, reports: Sequence[Report], held: Held
    ) -> list[ReportReply | Exception] | None:
        """The reports decided from the snapshot this process holds, before anything is
        locked, and written in ONE round trip (`decisions.commit_held`: BEGIN, the snapshot
        and the reported commands' outcomes written only while the row is still at the held
        version and each reported command still runs, the other writes, COMMIT). None when
        that does not apply (a report of a command
        the snapshot does not list, loop data to load, a sub-playbook to start) or the
        precondition failed: nothing is written then, and the locked path decides from the
        row. The decision is the one the locked path would make: the same pure engine on the
        same state and outcomes."""
        state = held.state
        ids = [report.command_id for report in reports]
        if len(set(ids)) < len(ids):
            return None
        steps: list[str | None] = []
        for command_id in ids:
            ref = state.commands.get(command_id)
            if ref is None:
                return None
            steps.append(ref.step)
        outcomes = self._outcomes(reports, steps)
        playbook = await self.playbooks.playbook(held.catalog_id)
        decision = self.loop_data.decide_held(playbook, state, outcomes.incoming, self.new_id)
        if decision is None or _starts_child(decision):
            return None
        effects = Effects()
        # the snapshot and the reported commands' outcomes are written by commit_held's
        # compare-and-set (migration 0013), the rest by the statement
        writes, _ = self._stage(
            decision, outcomes.recorded, effects, outcomes.settled, outcomes.hand_to, held=True
        )
        reported = [
            decisions.Reported(report.command_id, report.attempt, report.outcome.status.value)
            for report in reports
        ]
        new = decision.state
        try:
            async with self.pool.connection() as conn, _rolled_back_on_error(conn):
                await decisions.commit_held(
                    conn,
                    state.execution_id,
                    held.version,
                    reported,
                    decisions.State(
                        self.snapshots.snapshot(decision), new.status, new.result, new.error
                    ),
                    [writes] if writes else [],
                )
        except decisions.Stale as exc:
            log.debug("execution %s: %s; deciding under the locks", state.execution_id, exc)
            metrics.HELD_STALE.inc()
            return None
        self.states.put(state.execution_id, Held(held.version + 1, decision.state, held.catalog_id))
        answers: list[Exception | None] = [None] * len(reports)
        return await self._answer(reports, answers, decision, decision.state.status, effects)

    def _outcomes(self, reports: Sequence[Report], steps: Sequence[str | None]) -> _Outcomes:
        """What the reports that can be recorded (a step, not None) append and tell the
        engine, the commands they settle, and who may take a next command."""
        outcomes = _Outcomes()
        for index, (report, step) in enumerate(zip(reports, steps, strict=True)):
            if step is None:
                continue
            event, change = self._outcome(report, step)
            outcomes.recorded.append(event)
            outcomes.incoming.append(change)
            outcomes.settled[report.outcome.status.value].append(report.command_id)
            if report.takes_next and report.worker_id != SERVER_WORKER:
                outcomes.hand_to.insert(0, (index, report.worker_id))  # the latest first
        return outcomes

    async def _answer(
        self,
        reports: Sequence[Report],
        answers: Sequence[Exception | None],
        decision: Decision | None,
        status: str,
        effects: Effects,
    ) -> list[ReportReply | Exception]:
        """After commit: the effects, then each report's answer (with the command handed
        to it, under continuation)."""
        for report in reports:
            metrics.EVENTS.labels(report.event_type.value).inc()
        await self.after_commit(effects)
        reply = ReportReply(ExecutionStatus(status), len(decision.commands) if decision else 0)
        replies: list[ReportReply | Exception] = [
            reply if answer is None else answer for answer in answers
        ]
        for index, command in effects.handed.items():
            replies[index] = ReportReply(reply.status, reply.issued, command)
        return replies

    def _hand_over(
        self,
        execution_id: int,
        publish: Sequence[CommandRecord],
        hand_to: Sequence[tuple[int, str]],
    ) -> list[tuple[int, decisions.Claim]]:
        """Continuation (NOETL_CONTINUATION): each report whose worker takes a next command
        (`hand_to`: report index and worker, the latest report first) gets one of the commands
        the decision issues to publish (none when it starts a sub-playbook): written claimed
        (attempt 1, with its `command.claimed` event) for that worker and handed over in that
        report's answer instead of being published. A sequential step hands its one next
        command to its worker; a loop's finished iterations hand their next iterations to the
        workers that ran them; what is left is published. Crash safety is the same as for any
        claim: if that worker never reports, the lease lapses and the relay republishes it."""
        if not self.settings.continuation:
            return []
        mine = [command for command in publish if command.execution_id == execution_id]
        lease = self.settings.lease_seconds
        return [
            (index, decisions.Claim(command.command_id, worker_id, lease))
            for (index, worker_id), command in zip(hand_to, mine, strict=False)
        ]

    def _outcome(self, report: Report, step: str) -> tuple[EventRecord, Incoming]:
        """The event that records an outcome, and what it tells the engine."""
        outcome = report.outcome
        extra: dict[str, Any] = {}
        if outcome.variables:
            extra["variables"] = dict(outcome.variables)
        if outcome.problems:
            extra["problems"] = list(outcome.problems)
        if outcome.log:
            extra["log"] = dict(outcome.log)
        if outcome.masked:
            extra["masked"] = True  # the worker replaced a secret value by ***
        if outcome.error_fields and not outcome.ok:
            extra["error_fields"] = dict(outcome.error_fields)
        event = EventRecord(
            report.execution_id,
            self.new_id(),
            outcome.event_type,
            step=step,
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
            else CommandFailed(report.command_id, outcome.error or "failed", outcome.error_fields)
        )
        return event, change

    # -- append → decide → write ----------------------------------------------------------

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

    async def _decide(
        self,
        conn: psycopg.AsyncConnection[Any],
        execution: dict[str, Any],
        incoming: Sequence[Incoming],
        recorded: Sequence[EventRecord],
        effects: Effects,
        *,
        settled: Mapping[str, Sequence[str]] | None = None,
        hand_to: Sequence[tuple[int, str]] = (),
        last: list[tuple[str, list[Any]]] | None = None,
        held: Held | None = None,
    ) -> Decision | None:
        """Append `recorded` and settle its commands (`settled`: command ids by their final
        status), run the engine unless the execution has ended, write it all. `hand_to`: the
        reports (index, worker) whose answers may take a next command (continuation).
        `last`: where to leave the writes for the caller to send with its COMMIT, when nothing
        follows them. `held`: the version and state `self.states` held when the row was
        locked; the row has no `state` when that is its version."""
        if execution["status"] != ExecutionStatus.RUNNING:
            writes = decisions.statement(
                execution["execution_id"], events=recorded, settled=settled
            )
            if writes is not None and last is not None:
                last.append(writes)
            elif writes is not None:
                await conn.execute(*writes)
            return None
        playbook = await self.playbooks.playbook(execution["catalog_id"])
        if execution["state"] is not None:
            state = await self.snapshots.load(conn, execution["state"])
        elif held is not None and held.version == execution["state_version"]:
            state = held.state
        else:  # begin_locked leaves `state` out only for the version it was given
            raise RuntimeError(f"execution {execution['execution_id']}: no state snapshot")
        try:  # the engine never raises; the loop data it asks for may be missing
            decision = await self.loop_data.decide(conn, playbook, state, incoming, self.new_id)
        except LoopDataMissing as exc:
            log.exception("execution %s: loop data missing", state.execution_id)
            self.states.drop(state.execution_id)  # changed below in place
            for change in incoming:  # their outcomes are recorded: nothing left to cancel
                if isinstance(change, CommandCompleted | CommandFailed):
                    state.commands.pop(change.command_id, None)
            decision = give_up(playbook, state, str(exc), new_id=self.new_id)
        await self._write(
            conn, decision, recorded, effects, settled=settled, hand_to=hand_to, last=last
        )
        return decision

    async def _write(
        self,
        conn: psycopg.AsyncConnection[Any],
        decision: Decision,
        recorded: Sequence[EventRecord],
        effects: Effects,
        depth: int = 0,
        *,
        settled: Mapping[str, Sequence[str]] | None = None,
        hand_to: Sequence[tuple[int, str]] = (),
        last: list[tuple[str, list[Any]]] | None = None,
        held: bool = False,
    ) -> None:
        """The decision's writes in one statement (`store.decisions`), then the sub-playbooks
        it starts; what to publish after commit goes to `effects`. `last`: see `_decide`
        (used only when no sub-playbook starts after the writes); `held`: see `_stage`."""
        writes, children = self._stage(decision, recorded, effects, settled, hand_to, held=held)
        if writes is not None and last is not None and not children:
            last.append(writes)
        elif writes is not None:
            await conn.execute(*writes)
        for command in children:
            await self._start_child(conn, command, effects, depth)

    def _stage(
        self,
        decision: Decision,
        recorded: Sequence[EventRecord],
        effects: Effects,
        settled: Mapping[str, Sequence[str]] | None,
        hand_to: Sequence[tuple[int, str]],
        *,
        held: bool = False,
    ) -> tuple[tuple[str, list[Any]] | None, list[CommandRecord]]:
        """The decision's writes as one statement, and the sub-playbook commands it issues
        (their children start in the transaction: `_write`). What happens after commit goes to
        `effects`. `held`: the statement leaves out the snapshot and the `settled` commands
        (`decisions.commit_held` writes them, or a start's row holds its snapshot)."""
        state = decision.state
        cancelled = set(decision.cancelled)
        issued = [c for c in decision.commands if c.command_id not in cancelled]
        children = [c for c in issued if c.tool.get("kind") == "playbook"]
        publish = [c for c in issued if c.tool.get("kind") != "playbook"]
        claims = [] if children else self._hand_over(state.execution_id, publish, hand_to)
        events_written = [*recorded, *decision.events]
        handed: set[str] = set()
        by_id = {command.command_id: command for command in publish}
        for index, claim in claims:
            command = by_id[claim.command_id]
            handed.add(command.command_id)
            events_written.append(
                EventRecord(
                    state.execution_id,
                    self.new_id(),
                    EventType.COMMAND_CLAIMED,
                    step=command.step,
                    command_id=command.command_id,
                    attempt=1,
                    worker_id=claim.worker_id,
                    status=CommandStatus.CLAIMED.value,
                )
            )
            effects.handed[index] = ClaimedCommand(
                execution_id=command.execution_id,
                event_id=command.event_id,
                command_id=command.command_id,
                step=command.step,
                tool=command.tool,
                input=command.input,
                attempt=1,
                worker_id=claim.worker_id,
                iteration=command.iteration,
                lease_seconds=claim.lease_seconds,
            )
        effects.publish.extend(c for c in publish if c.command_id not in handed)
        effects.issued += len(decision.commands)
        if decision.finished:
            effects.ended.append((state.execution_id, state.status, state.error))
        # held: a command settled by commit_held that the decision also cancels keeps its outcome
        apart = {c for ids in (settled or {}).values() for c in ids} if held else set()
        writes = decisions.statement(
            state.execution_id,
            events=events_written,
            commands=decision.commands,
            cancelled=[c for c in decision.cancelled if c not in apart],
            settled=None if held else settled,
            claims=[claim for _, claim in claims],
            state=None
            if held
            else decisions.State(
                self.snapshots.snapshot(decision, recorded), state.status, state.result, state.error
            ),
        )
        return writes, children

    async def _start_child(
        self,
        conn: psycopg.AsyncConnection[Any],
        command: CommandRecord,
        effects: Effects,
        depth: int,
    ) -> None:
        """A `kind: playbook` command: the server claims it and starts the child execution in
        the same transaction; a child that cannot start fails the command after commit. The
        tool's `timeout` (alias `timeout_seconds`) is the child's time limit: the relay
        cancels it past its deadline, which fails the command."""
        await commands.claim_for_server(
            conn, command.execution_id, [command.command_id], SERVER_WORKER
        )
        await events.insert_events(conn, [subplaybooks.claimed(command, self.new_id())])
        try:
            # the chain above this execution counts too: a playbook calling itself after a
            # step starts each child from another transaction, where `depth` is 0 again
            chain = await executions.nesting(conn, command.execution_id, subplaybooks.MAX_DEPTH)
            request = subplaybooks.child_request(command, max(depth, chain))
            entry = await self.playbooks.resolve(
                path=request.path, catalog_id=request.catalog_id, version=request.version
            )
            await self.start(
                conn,
                entry,
                subplaybooks.child_input(command),
                effects,
                parent_execution_id=command.execution_id,
                parent_command_id=command.command_id,
                depth=depth + 1,
                timeout_seconds=subplaybooks.child_timeout(command),
            )
        except (NoetlError, ValueError) as exc:
            outcome = Outcome.failure(f"sub-playbook: {exc}")
            effects.reports.append(
                Report(command.execution_id, command.command_id, 1, SERVER_WORKER, outcome)
            )

    # -- after commit ---------------------------------------------------------------------

    async def after_commit(self, effects: Effects) -> None:
        """Count and log, publish, then tell parents and children; each failure is left to
        the relay."""
        if effects.handed:
            metrics.EVENTS.labels(EventType.COMMAND_CLAIMED.value).inc(len(effects.handed))
        metrics.COMMANDS_ISSUED.inc(effects.issued)
        for execution_id, status, error in effects.ended:
            metrics.EXECUTIONS_FINISHED.labels(status).inc()
            log.info("execution %s %s%s", execution_id, status, f": {error}" if error else "")
        await self.publish(effects.publish)
        for execution_id, _, _ in effects.ended:
            await self.settle(execution_id)
        for report in effects.reports:
            # from a task of its own: this may run inside the decision of the very execution
            # the report is for (a sub-playbook that cannot start, issued by a report), whose
            # next batch starts only once that decision has returned
            task = asyncio.get_running_loop().create_task(self._report_own(report))
            self._own_reports.add(task)
            task.add_done_callback(self._own_reports.discard)

    async def _report_own(self, report: Report) -> None:
        """Record an outcome the server itself reached (a sub-playbook that could not start)."""
        try:
            await self.report(report)
        except (ConflictError, NotFoundError) as exc:
            log.info("outcome of %s not recorded: %s", report.command_id, exc)
        except Exception:
            log.exception("outcome of %s not recorded", report.command_id)

    async def settle(self, execution_id: int) -> None:
        """Tell the parent of an ended child; cancel the running children of an ended parent.
        The relay calls it again for anything a crash left between two transactions."""
        async with self.pool.connection() as conn:
            row = await executions.ended_view(conn, execution_id)  # without its snapshot
            if row is None or row["status"] == ExecutionStatus.RUNNING:
                return
            parent_command = None
            if row["parent_command_id"]:
                parent_command = await commands.get_by_command_id(
                    conn, row["parent_execution_id"], row["parent_command_id"]
                )
                step = subplaybooks.returned_step(row, parent_command)
                if step is not None:  # the parent takes one of its step results
                    full = await executions.get_execution(conn, execution_id)
                    row["state"] = await snapshots.resolved(conn, full["state"]) if full else {}
            children = []
            if row["children_running"]:
                children = await executions.running_children(conn, execution_id)
        report = subplaybooks.parent_report(row, parent_command)
        if report is not None:
            try:
                await self.report(report)
            except (ConflictError, NotFoundError) as exc:
                log.info("parent of %s not told: %s", execution_id, exc)
        for child in children:
            with contextlib.suppress(ConflictError):  # it ended meanwhile
                await self.cancel(child, f"parent execution {execution_id} {row['status']}")

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


@dataclass(frozen=True)
class _First:
    """A new execution before it is written: its catalog entry, `playbook.initialized`
    event, first decision and snapshot, and where it comes from."""

    entry: dict[str, Any]
    initialized: EventRecord
    decision: Decision
    snapshot: dict[str, Any]
    parent_execution_id: int | None
    parent_command_id: str | None
    rerun_of: int | None
    timeout_seconds: float | None

    @property
    def execution_id(self) -> int:
        return self.initialized.execution_id

    def row(self) -> dict[str, Any]:
        """Its `noetl.execution` row, as `executions.INSERT_STARTED` takes it."""
        state = self.decision.state
        return {
            "execution_id": self.execution_id,
            "catalog_id": self.entry["catalog_id"],
            "path": self.entry["path"],
            "version": self.entry["version"],
            "parent_execution_id": self.parent_execution_id,
            "parent_command_id": self.parent_command_id,
            "status": state.status,
            "state": self.snapshot,
            "result": state.result,
            "error": state.error,
            "rerun_of": self.rerun_of,
            "timeout": self.timeout_seconds,
        }


def _starts_child(decision: Decision) -> bool:
    """Whether a decision issues a sub-playbook command (its child starts in the same
    transaction: `Flow._start_child`)."""
    cancelled = set(decision.cancelled)
    return any(
        command.tool.get("kind") == "playbook"
        for command in decision.commands
        if command.command_id not in cancelled
    )


@dataclass
class _Outcomes:
    recorded: list[EventRecord] = field(default_factory=list)
    incoming: list[Incoming] = field(default_factory=list)
    settled: dict[str, list[str]] = field(
        default_factory=lambda: {CommandStatus.COMPLETED.value: [], CommandStatus.FAILED.value: []}
    )
    hand_to: list[tuple[int, str]] = field(default_factory=list)  # continuation: index, worker


@contextlib.asynccontextmanager
async def _rolled_back_on_error(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """For a transaction begun and committed by hand (`commands.begin_locked`,
    `decisions.commit`): any error rolls it back before the connection goes back to the pool;
    a unique-index conflict (another request recorded the same outcome first) is a 409."""
    try:
        yield
    except BaseException as exc:
        status = conn.info.transaction_status
        if status in (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR):
            with contextlib.suppress(psycopg.Error):
                await conn.execute("ROLLBACK")
        if isinstance(exc, psycopg.errors.UniqueViolation):
            raise ConflictError(f"already recorded: {exc.diag.constraint_name}") from None
        raise


def _check(
    execution: dict[str, Any] | None,
    row: dict[str, Any] | None,
    report: Report,
    settled: set[str],
) -> Exception | None:
    """Why a report cannot be recorded (404 or 409), or None when it can."""
    if execution is None:
        return NotFoundError(f"execution {report.execution_id} does not exist")
    if row is None:
        return NotFoundError(f"command {report.command_id} does not exist")
    status = CommandStatus(row["status"])
    if status.terminal or report.command_id in settled:
        shown = status.value if status.terminal else "reported"
        return ConflictError(f"command {report.command_id} is already {shown}")
    if status is not CommandStatus.CLAIMED or report.attempt > row["attempt"]:
        return ConflictError(
            f"attempt {report.attempt} of {report.command_id} is stale"
            f" (current attempt {row['attempt']})"
        )
    # An earlier attempt that finished while the server was away (its lease ran out and the
    # command was claimed again) is accepted while no attempt has an outcome yet: the work is
    # done, and the later attempt is stopped at its next lease renewal.
    return None
