"""Bearer-token access control (ASGI middleware).

Unset tokens mean an open API (local use). With `NOETL_API_TOKEN` every route but `/health`
needs it; `NOETL_WORKER_TOKEN` opens only the routes a worker calls. Comparison is constant
time and a refusal says nothing about why. The scope the request was let in with (`open`,
`api` or `worker`) is left in `request.state.token_scope` for the routes that care
(credential data: `credential_routes`).
"""

from __future__ import annotations

import hmac

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/health", "/"})
OPEN_PREFIXES = ("/ui/",)  # the web UI's page shells and assets: no data (that comes from /api)
OPEN_SCOPE = "open"  # no tokens configured: every route, every credential's data
WORKER_PREFIXES = ("/api/commands/", "/api/events", "/api/workers/heartbeat", "/api/credentials/")


class BearerAuth:
    def __init__(self, app: ASGIApp, api_token: str | None, worker_token: str | None) -> None:
        self.app = app
        self.api_token = (api_token or "").encode()
        self.worker_token = (worker_token or "").encode()

    def scope_of(self, path: str, token: bytes) -> str | None:
        """`api`, `worker`, or None when the token does not open `path`."""
        if self.api_token and hmac.compare_digest(token, self.api_token):
            return "api"
        worker_route = path.startswith(WORKER_PREFIXES)
        if (
            bool(self.worker_token)
            and worker_route
            and hmac.compare_digest(token, self.worker_token)
        ):
            return "worker"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (self.api_token or self.worker_token):
            if scope["type"] == "http":
                scope.setdefault("state", {})["token_scope"] = OPEN_SCOPE
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        granted = self.scope_of(path, token.strip()) if scheme.lower() == b"bearer" else None
        if granted is not None:
            scope.setdefault("state", {})["token_scope"] = granted
            await self.app(scope, receive, send)
            return
        refusal = JSONResponse(
            {"error": "Unauthorized", "message": "missing or invalid bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await refusal(scope, receive, send)
