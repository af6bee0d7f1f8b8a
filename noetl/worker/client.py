"""The worker's HTTP client for the server API. Speaks HTTP only; knows no server internals.

This is the per-step hot path (claim, report): requests go through `worker.http`, a small
keep-alive HTTP/1.1 client (httpx cost 1.3-2 ms a round trip here, aiohttp ~0.4 ms of CPU,
`worker.http` ~0.06 ms; benchmarks/README.md). Bodies both ways go through the one codec
(`noetl.jsonfast`, orjson).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from noetl import jsonfast
from noetl.worker.http import HTTPClient, Unreachable


class ServerUnreachable(Exception):
    """No answer from the server: connection refused, reset or timed out."""


@dataclass(frozen=True)
class Response:
    """An HTTP answer: its status and its parsed JSON body (or text)."""

    status: int
    body: Any

    @property
    def message(self) -> str:
        if isinstance(self.body, dict):
            return str(self.body.get("message", self.body))
        return str(self.body)[:200]


class ServerClient:
    def __init__(self, base_url: str, *, timeout: float = 30.0, token: str | None = None) -> None:
        self._base_url = base_url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self._session: HTTPClient | None = None

    def _http(self) -> HTTPClient:
        if self._session is None:
            self._session = HTTPClient(
                self._base_url, timeout=self._timeout, headers=self._headers, limit=64
            )
        return self._session

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Response:
        data = None if body is None else jsonfast.dumps(body)
        try:
            status, raw = await self._http().request(method, path, data, "application/json")
        except Unreachable as exc:
            raise ServerUnreachable(str(exc)) from exc
        try:
            parsed: Any = jsonfast.loads(raw) if raw else None
        except ValueError:  # not JSON (a proxy's error page): the text
            parsed = raw.decode("utf-8", errors="replace")
        return Response(status, parsed)

    async def _post(self, path: str, body: dict[str, Any]) -> Response:
        return await self._request("POST", path, body)

    async def credential(
        self, name: str, event_id: int | None = None, worker_id: str | None = None
    ) -> Response:
        """A credential's data, for the command (by its event id) this worker holds."""
        held = f"&command={event_id}" if event_id is not None else ""
        held += f"&worker={quote(worker_id)}" if worker_id else ""
        return await self._request("GET", f"/api/credentials/{name}?include_data=true{held}", None)

    async def claim_many(self, event_ids: list[int], worker_id: str) -> Response:
        return await self._post(
            "/api/commands/claim", {"worker_id": worker_id, "event_ids": event_ids}
        )

    async def report_many(self, bodies: list[dict[str, Any]]) -> Response:
        return await self._request("POST", "/api/events/batch", {"events": bodies})

    async def renew_lease(self, event_id: int, attempt: int) -> Response:
        return await self._post(f"/api/commands/{event_id}/lease", {"attempt": attempt})

    async def retrying(self, event_id: int, body: dict[str, Any]) -> Response:
        return await self._post(f"/api/commands/{event_id}/retrying", body)

    async def start_child(self, event_id: int, body: dict[str, Any]) -> Response:
        """Start a sub-playbook for the command this worker holds (a pipeline's item)."""
        return await self._post(f"/api/commands/{event_id}/children", body)

    async def child(self, event_id: int, child_id: str, return_step: str | None) -> Response:
        query = f"?return_step={quote(return_step)}" if return_step else ""
        return await self._request(
            "GET", f"/api/commands/{event_id}/children/{child_id}{query}", None
        )

    async def cancel_child(self, event_id: int, child_id: str, reason: str) -> Response:
        return await self._post(
            f"/api/commands/{event_id}/children/{child_id}/cancel", {"reason": reason}
        )

    async def heartbeat(self, body: dict[str, Any]) -> Response:
        return await self._post("/api/workers/heartbeat", body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
