"""The relay and reaper: at-least-once notification, whatever NATS or a crash did.

One server replica at a time (a lease row in `noetl.lease`) republishes commands still PENDING
after `relay_after` seconds and commands whose claim lease expired; a command whose every
attempt was lost fails with `worker_lost`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

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

    async def run(self) -> None:
        interval = self.settings.relay_interval
        while True:
            await asyncio.sleep(interval)
            try:
                async with self.orchestrator.pool.connection() as conn:
                    leader = await workers.acquire_lease(conn, "relay", self.holder, interval * 3)
                if leader:
                    await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay pass failed")

    async def once(self) -> int:
        """One pass; returns how many commands were republished."""
        async with self.orchestrator.pool.connection() as conn:
            rows = await commands.due_for_relay(conn, self.settings.relay_after)
            unsettled = await executions.unsettled(conn, self.settings.relay_after)
        for execution_id in unsettled:
            await self.orchestrator.settle(execution_id)
        sent: list[int] = []
        for row in rows:
            if (
                row["status"] == CommandStatus.CLAIMED
                and row["attempt"] >= self.settings.max_attempts
            ):
                await self.orchestrator.workers.fail_lost(row["event_id"])
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
