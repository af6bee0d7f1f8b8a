"""The scheduler: every server runs it; each due tick fires exactly once.

A pass locks the due schedules (`FOR UPDATE SKIP LOCKED`: a schedule another server is
handling is left to it) and, in ONE transaction per schedule, records each tick in
`noetl.schedule_tick` (its primary key `(schedule_id, tick)` is the guarantee: a tick already
recorded is never fired again), starts the execution, tags it with the schedule and moves the
schedule's `next_fire_at` on. A crash before commit leaves nothing: the tick fires at the next
pass. Missed ticks and the overlap policy are decided by `noetl.schedule.due` and below.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from noetl.errors import NoetlError
from noetl.schedule import Timing, due
from noetl.server.records import Effects
from noetl.store import catalog, schedules

if TYPE_CHECKING:
    from noetl.server.service import Orchestrator

log = logging.getLogger(__name__)

OVERLAP = "skipped: the previous execution is still running"


def timing_of(row: dict[str, Any]) -> Timing:
    return Timing(row["cron"], row["every_seconds"], row["timezone"])


class Scheduler:
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.settings = orchestrator.settings

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.schedule_interval)
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler pass failed")

    async def once(self) -> int:
        """One pass over the due schedules; returns how many executions it started."""
        flow = self.orchestrator.flow
        async with self.orchestrator.pool.connection() as conn:
            due_ids = [row["schedule_id"] for row in await schedules.due_ids(conn)]
        started = 0
        for schedule_id in due_ids:
            effects = Effects()
            try:
                async with flow.transaction() as conn:
                    started += await self._handle(conn, schedule_id, effects)
            except psycopg.OperationalError:
                raise  # the database is gone: the pass fails (run() logs it and retries)
            except Exception:  # one bad row never stops the other schedules
                log.exception(
                    "schedule %s: its pass failed; the other schedules go on", schedule_id
                )
                continue
            await flow.after_commit(effects)
        return started

    async def _handle(
        self, conn: psycopg.AsyncConnection[Any], schedule_id: int, effects: Effects
    ) -> int:
        row = await schedules.lock_if_due(conn, schedule_id)
        if row is None:  # another server holds it, or it is no longer due
            return 0
        now: datetime = row["now"]
        plan = due(
            timing_of(row),
            row["next_fire_at"],
            now,
            grace=self.settings.schedule_grace,
            catch_up=row["catch_up"],
        )
        if plan.skipped:
            log.warning("schedule %s: %d missed tick(s) skipped", schedule_id, plan.skipped)
        started = 0
        last = row["last_execution_id"]
        for tick in plan.fire:
            if row["overlap"] == "skip" and await schedules.still_running(conn, last):
                await schedules.claim_tick(conn, schedule_id, tick, OVERLAP)
                continue
            entry = await catalog.get_entry(
                conn, path=row["path"], version=row["version"], content=False
            )
            if entry is None:
                what = f"version {row['version']} of " if row["version"] else ""
                outcome = f"skipped: {what}{row['path']} is not registered"
                await schedules.claim_tick(conn, schedule_id, tick, outcome)
                continue
            if not await schedules.claim_tick(conn, schedule_id, tick, "started"):
                continue  # fired already (by any server)
            try:
                async with conn.transaction():  # a savepoint: a failed start leaves nothing
                    execution_id = await self.orchestrator.flow.start(
                        conn, entry, dict(row["payload"]), effects
                    )
            except NoetlError as exc:  # e.g. the playbook no longer starts: say so, go on
                log.warning("schedule %s tick %s: %s", schedule_id, tick, exc)
                await schedules.set_tick_outcome(conn, schedule_id, tick, f"failed: {exc}")
                continue
            await schedules.record_start(conn, schedule_id, tick, execution_id)
            last = execution_id
            started += 1
        await schedules.advance(conn, schedule_id, plan.next_fire_at)
        return started
