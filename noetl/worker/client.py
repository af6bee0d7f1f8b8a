"""The worker's HTTP client for the server API. Speaks HTTP only; knows no server internals."""

from __future__ import annotations

from typing import Any

import httpx


class ServerClient:
    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def claim(self, event_id: int, worker_id: str) -> httpx.Response:
        return await self.http.post(
            f"/api/commands/{event_id}/claim", json={"worker_id": worker_id}
        )

    async def renew_lease(self, event_id: int, attempt: int) -> httpx.Response:
        return await self.http.post(f"/api/commands/{event_id}/lease", json={"attempt": attempt})

    async def report(self, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post("/api/events", json=body)

    async def heartbeat(self, body: dict[str, Any]) -> httpx.Response:
        return await self.http.post("/api/workers/heartbeat", json=body)

    async def close(self) -> None:
        await self.http.aclose()
