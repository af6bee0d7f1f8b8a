"""Bearer-token access control (ASGI middleware).

Unset tokens mean an open API (local use). With `NOETL_API_TOKEN` every route but `/health`
needs it; `NOETL_WORKER_TOKEN` also opens the routes a worker calls. Comparison is constant
time and a refusal says nothing about why.
"""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/health", "/"})
OPEN_PREFIXES = ("/ui/",)  # the web UI's page shells and assets: no data (that comes from /api)
WORKER_PREFIXES = ("/api/commands/", "/api/events", "/api/workers/heartbeat", "/api/credentials/")


class BearerAuth:
    def __init__(self, app: ASGIApp, api_token: str | None, worker_token: str | None) -> None:
        self.app = app
        self.api_token = (api_token or "").encode()
        self.worker_token = (worker_token or "").encode()

    def allowed(self, path: str, token: bytes) -> bool:
        if self.api_token and hmac.compare_digest(token, self.api_token):
            return True
        worker_route = path.startswith(WORKER_PREFIXES)
        return (
            bool(self.worker_token)
            and worker_route
            and hmac.compare_digest(token, self.worker_token)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (self.api_token or self.worker_token):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"bearer" and self.allowed(path, token.strip()):
            await self.app(scope, receive, send)
            return
        refusal = JSONResponse(
            {"error": "Unauthorized", "message": "missing or invalid bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await refusal(scope, receive, send)
