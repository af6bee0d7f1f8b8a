"""The server's composition, in one place: what the routes, the relay and the CLI reach.

    routes / relay ──▶ Orchestrator ──▶ WorkerAPI (claims, leases, lost workers)
                                   │           │
                                   ▼           ▼
                                  Flow (the one write path: append → decide → write
                                   │          → after commit; outcomes batched here)
                                   ▼
                                  Playbooks (catalog + parsed cache) · store · bus · engine

Imports go one way, down this picture; nothing below imports what is above it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from noetl.bus.nats_client import NATSCommandPublisher
from noetl.config import Settings
from noetl.dsl import Playbook
from noetl.protocol.outcome import Report, ReportReply
from noetl.protocol.records import CommandRecord
from noetl.server.flow import Flow
from noetl.server.playbooks import Playbooks
from noetl.server.worker_api import WorkerAPI


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
        self.playbooks = Playbooks(pool, new_id, settings.max_step_runs)
        self.flow = Flow(pool, publisher, settings, new_id, self.playbooks)
        self.workers = WorkerAPI(self.flow)

    # -- catalog ------------------------------------------------------------------------

    async def register(self, content: str, file: str | None = None) -> dict[str, Any]:
        return await self.playbooks.register(content, file)

    async def playbook(self, catalog_id: int) -> Playbook:
        return await self.playbooks.playbook(catalog_id)

    async def resolve(
        self,
        *,
        path: str | None = None,
        catalog_id: int | None = None,
        content: str | None = None,
        version: int | None = None,
    ) -> dict[str, Any]:
        return await self.playbooks.resolve(
            path=path, catalog_id=catalog_id, content=content, version=version
        )

    # -- executions (all through the one write path) --------------------------------------

    async def execute(
        self,
        entry: dict[str, Any],
        payload: dict[str, Any] | None = None,
        *,
        parent_execution_id: int | None = None,
        timeout_seconds: float | None = None,
    ) -> int:
        return await self.flow.execute(
            entry,
            payload,
            parent_execution_id=parent_execution_id,
            timeout_seconds=timeout_seconds,
        )

    async def cancel(self, execution_id: int, reason: str) -> str:
        return await self.flow.cancel(execution_id, reason)

    async def report(self, report: Report) -> ReportReply:
        """Record a worker's (or the server's own) outcome and decide what runs next."""
        return await self.flow.report(report)

    async def report_all(self, reports: Sequence[Report]) -> list[ReportReply | Exception]:
        return await self.flow.report_all(reports)

    async def settle(self, execution_id: int) -> None:
        """Tell the parent of an ended sub-playbook; cancel the children of an ended parent."""
        await self.flow.settle(execution_id)

    async def publish(self, issued: Sequence[CommandRecord]) -> int:
        return await self.flow.publish(issued)
