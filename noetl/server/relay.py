"""The relay and reaper: at-least-once notification, whatever NATS or a crash did.

One server replica at a time (a lease row in `noetl.lease`) republishes commands still PENDING
after `relay_after` seconds and commands whose claim lease expired; a command whose every
attempt was lost fails with `worker_lost`; an execution past its deadline (started with
`timeout_seconds`, or a sub-playbook whose step set `timeout`) is cancelled.

Dead workers: a worker heartbeats every `NOETL_HEARTBEAT_SECONDS`; when one has been silent
for `NOETL_WORKER_DEAD_AFTER` seconds its claims are released at once (their leases end), so a
killed worker's step resumes elsewhere within seconds instead of after the lease. A live worker
running a long step keeps heartbeating and keeps its claim, even when its lease lapsed because
the server was down and it could not renew: it reports its outcome when the server is back.
Each heartbeat lists the commands the worker holds: a lapsed claim that its worker's heartbeat
(received after the lapse) leaves out is relayed too, since that worker never learned of it
(the report answer that handed it over, continuation, was lost).
The relay trusts the heartbeats only once it has itself run without a failure for that long:
after a server restart or a database outage nobody could heartbeat, and no claim is taken
back for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from noetl.errors import ConflictError, NotFoundError
from noetl.protocol.events import CommandStatus
from noetl.protocol.message import CommandMessage
from noetl.server import metrics
from noetl.server.service import Orchestrator
from noetl.store import commands, executions, workers

log = logging.getLogger(__name__)


class Relay:
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.settings = orchestrator.settings
        self.holder = f"{self.settings.worker_id}-{uuid.uuid4().hex[:8]}"
        self.healthy_since: float | None = time.monotonic()  # None after a failed pass

    async def run(self) -> None:
        interval = self.settings.relay_interval
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.orchestrator.pool.connection() as conn:
                    leader = await workers.acquire_lease(conn, "relay", self.holder, interval * 3)
                if leader:
                    await self.once()
                if self.healthy_since is None:
                    self.healthy_since = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.healthy_since = None
                log.exception("relay pass failed")

    async def once(self) -> int:
        """One pass; returns how many commands were republished. Rows are handled one at a
        time: a row that cannot be processed fails its own execution and the pass goes on."""
        trusted = self.trusts_heartbeats()
        async with self.orchestrator.pool.connection() as conn:
            if trusted:
                released = await commands.release_dead_workers(
                    conn, self.settings.worker_dead_after
                )
                if released:
                    metrics.RELEASED.inc(len(released))
                    log.warning("released %d claim(s) of silent workers", len(released))
            silent_for = self.settings.worker_dead_after if trusted else None
            rows = await commands.due_for_relay(conn, self.settings.relay_after, silent_for)
            unsettled = await executions.unsettled(conn, self.settings.relay_after)
            overdue = await executions.overdue(conn)
        for row in overdue:
            await self.time_out(row["execution_id"], row["seconds"])
        for execution_id in unsettled:
            try:
                await self.orchestrator.settle(execution_id)
            except Exception as exc:
                await self.quarantine(execution_id, "settling its sub-playbooks", exc)
        sent: list[int] = []
        for row in rows:
            if (
                row["status"] == CommandStatus.CLAIMED
                and row["attempt"] >= self.settings.max_attempts
            ):
                try:
                    await self.orchestrator.workers.fail_lost(row["event_id"])
                except Exception as exc:
                    await self.quarantine(row["execution_id"], f"failing {row['step']}", exc)
                continue
            message = CommandMessage(
                row["execution_id"],
                row["event_id"],
                row["command_id"],
                row["step"],
                self.settings.server_url,
            )
            try:
                await self.orchestrator.publisher.publish(
                    message, f"{row['event_id']}:{row['publish_count'] + 1}"
                )
            except Exception as exc:
                log.warning("relay could not publish (%s); will retry", exc)
                break
            sent.append(row["event_id"])
        if sent:
            async with self.orchestrator.pool.connection() as conn:
                await commands.mark_notified(conn, sent)
            metrics.RELAYED.inc(len(sent))
            log.info("relay republished %d command(s)", len(sent))
        return len(sent)

    async def time_out(self, execution_id: int, seconds: float) -> None:
        """Cancel an execution past its deadline (started with `timeout_seconds`, or a
        sub-playbook whose step set `timeout`: its parent's step then fails with the reason,
        as for any cancelled child)."""
        reason = f"timed out: still running after its time limit of {seconds:g} s"
        try:
            await self.orchestrator.cancel(execution_id, reason)
        except (ConflictError, NotFoundError):
            return  # it ended meanwhile
        except Exception as exc:
            await self.quarantine(execution_id, "cancelling it past its deadline", exc)
            return
        metrics.TIMED_OUT.inc()
        log.warning("execution %s %s", execution_id, reason)

    def trusts_heartbeats(self) -> bool:
        """Heartbeats mean something only after a failure-free stretch as long as the silence
        that declares a worker dead (nobody could heartbeat while the server was down)."""
        since = self.healthy_since
        return since is not None and time.monotonic() - since >= self.settings.worker_dead_after

    async def quarantine(self, execution_id: int, doing: str, exc: Exception) -> None:
        """The last resort for a row no component can process: fail its execution with the
        reason, without reading its JSON, so it never stops the relay for the others."""
        log.error(
            "relay: execution %s cannot be processed (%s): %s: %s",
            execution_id,
            doing,
            type(exc).__name__,
            exc,
        )
        error = f"internal error while {doing}: {type(exc).__name__}: {exc}"[:2000]
        try:
            async with self.orchestrator.pool.connection() as conn, conn.transaction():
                ended = await executions.quarantine(
                    conn, execution_id, self.orchestrator.new_id(), error
                )
        except Exception:
            log.exception("relay: could not fail execution %s", execution_id)
            return
        if ended:
            metrics.EXECUTIONS_FINISHED.labels("FAILED").inc()
