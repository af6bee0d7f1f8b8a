"""The ``http`` tool: one HTTP request through a shared ``httpx.AsyncClient``.

Config: ``url`` (alias ``endpoint``, required), ``method`` (default GET), ``headers``,
``params``, one body of ``json``, ``body`` (alias ``data``; a string is sent as-is, a mapping
or list as JSON), ``form`` (a mapping, form-encoded) or ``payload`` (upstream's spelling: query
parameters for GET, HEAD and DELETE; otherwise the body, form-encoded when the Content-Type
header says ``application/x-www-form-urlencoded``, else JSON), ``timeout_seconds`` (alias
``timeout``, default 30), ``follow_redirects`` (default true), ``verify`` (alias
``verify_ssl``; default true; false, or a CA bundle path).

``auth`` (the resolved credential): ``{"type": "bearer", "token"}`` sets Authorization,
``{"type": "basic", "username", "password"}`` uses basic auth, ``{"headers": {...}}`` is
merged over the headers.

Result: ``{"status_code", "headers", "data", "body"}``, data being parsed JSON when the
response is JSON, else text; ``body`` is the same value (upstream fixtures read either). A
non-2xx status is a ToolError (retryable for 429 and 5xx) whose details are that result;
timeouts and connection errors are retryable ToolErrors. Messages name the URL without
credentials or query string.

The body is read up to ``max_response_bytes`` (``NOETL_MAX_RESPONSE_BYTES``) as it arrives,
decompressed: past it the call fails and the rest is not read, so an endless or inflating
body fails its step instead of the worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from noetl.tools.base import ToolCall, ToolError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
MAX_RESPONSE_BYTES = 256 * 1024 * 1024
_BODY_CHARS = 500
_FLAGS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class HttpTool:
    """Sends one request per call; see the module docstring."""

    kind = "http"
    default_timeout = DEFAULT_TIMEOUT

    def __init__(self, max_response_bytes: int | None = None) -> None:
        self.max_response_bytes = max_response_bytes or MAX_RESPONSE_BYTES
        self._clients: dict[bool | str, httpx.AsyncClient] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def run(self, call: ToolCall) -> Any:
        config = call.config
        url = _url(config.get("url", config.get("endpoint")))
        method = str(config.get("method") or "GET").upper()
        shown = safe_url(url)
        timeout = call.time_limit(DEFAULT_TIMEOUT)
        headers = httpx.Headers(_headers(config.get("headers")))
        auth = _apply_auth(call.auth, headers)
        client = self._client(_verify(config.get("verify", config.get("verify_ssl"))))
        logger.debug("http %s %s", method, shown)
        try:
            request = client.build_request(
                method,
                url,
                headers=headers,
                timeout=timeout,
                **_request_parts(config, method, headers),
            )
            response = await client.send(
                request,
                auth=auth,
                follow_redirects=_flag(config.get("follow_redirects"), "follow_redirects"),
                stream=True,
            )
            try:
                content = await self._body(response, f"{method} {shown}")
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise ToolError(
                f"{method} {shown} timed out after {timeout:g} s", retryable=True
            ) from None
        except httpx.UnsupportedProtocol as exc:
            raise ToolError(f"{method} {shown}: {exc}") from None
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ToolError(f"{method} {shown} failed: {reason}", retryable=True) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ToolError(f"{method} {shown} failed: {exc}") from None
        text = _decoded(response, content)
        data = _data(response, text)
        result = {
            "status_code": response.status_code,
            "headers": dict(response.headers),
            "data": data,
            "body": data,  # upstream's name for it: fixtures read either
        }
        if not response.is_success:
            status = response.status_code
            raise ToolError(
                f"{method} {shown} returned HTTP {status}: {text[:_BODY_CHARS]}",
                retryable=status == 429 or status >= 500,
                details=result,
            )
        return result

    async def _body(self, response: httpx.Response, what: str) -> bytes:
        """The response's body as it arrives (decompressed), up to the limit."""
        limit = self.max_response_bytes
        parts: list[bytes] = []
        size = 0
        async for part in response.aiter_bytes():
            size += len(part)
            if size > limit:
                raise ToolError(
                    f"{what}: the response is larger than {limit:,} bytes"
                    " (NOETL_MAX_RESPONSE_BYTES); the rest was not read"
                )
            parts.append(part)
        return b"".join(parts)

    async def close(self) -> None:
        """Close the clients (on this event loop); later calls open new ones."""
        clients = list(self._clients.values())
        same_loop = self._loop is _running_loop()
        self._clients.clear()
        if same_loop:
            for client in clients:
                await client.aclose()

    def _client(self, verify: bool | str) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them
            self._clients.clear()
            self._loop = loop
        client = self._clients.get(verify)
        if client is None:
            context: bool | ssl.SSLContext = True
            if isinstance(verify, str):
                try:
                    context = ssl.create_default_context(cafile=verify)
                except (OSError, ssl.SSLError) as exc:
                    raise ToolError(f"verify: cannot load CA bundle {verify!r}: {exc}") from None
            else:
                context = verify
            client = httpx.AsyncClient(verify=context, limits=_LIMITS, timeout=DEFAULT_TIMEOUT)
            self._clients[verify] = client
        return client


def safe_url(url: str) -> str:
    """The URL without user info, query string or fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _url(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ToolError("http tool needs `url`")
    return raw.strip()


def _headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ToolError(f"headers must be a mapping, got {type(raw).__name__}")
    return {str(name): str(value) for name, value in raw.items() if value is not None}


def _params(raw: Any) -> Any:
    if raw is None or isinstance(raw, Mapping | list | str):
        return raw
    raise ToolError(f"params must be a mapping, got {type(raw).__name__}")


_NO_BODY = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})


def _request_parts(
    config: Mapping[str, Any], method: str, headers: httpx.Headers
) -> dict[str, Any]:
    """httpx keyword arguments for the query string and the body, `payload` included."""
    params = _params(config.get("params"))
    payload = config.get("payload")
    if payload is None:
        return {"params": params, **_body(config)}
    if method in _NO_BODY:
        if not isinstance(payload, Mapping):
            raise ToolError(f"payload of a {method} must be a mapping (the query parameters)")
        merged = {**payload, **(params if isinstance(params, Mapping) else {})}
        return {"params": merged, **_body(config)}
    if any(config.get(name) is not None for name in ("json", "body", "data", "form")):
        raise ToolError("http tool takes one body: payload or json/body/data/form, not both")
    form = "application/x-www-form-urlencoded" in headers.get("content-type", "").lower()
    if form and isinstance(payload, Mapping):
        return {"params": params, "data": {str(k): _text(v) for k, v in payload.items()}}
    if isinstance(payload, str | bytes):
        return {"params": params, "content": payload}
    return {"params": params, "json": payload}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _body(config: Mapping[str, Any]) -> dict[str, Any]:
    """httpx keyword arguments for the one body field given."""
    given = [name for name in ("json", "body", "data", "form") if config.get(name) is not None]
    if len(given) > 1:
        raise ToolError(f"http tool takes one body, got {', '.join(given)}")
    if not given:
        return {}
    value = config[given[0]]
    if given[0] == "form":
        if not isinstance(value, Mapping):
            raise ToolError(f"form must be a mapping, got {type(value).__name__}")
        return {"data": dict(value)}
    if given[0] in ("body", "data") and isinstance(value, str | bytes):
        return {"content": value}
    return {"json": value}


_SECRET_PROVIDERS = {
    "secret_manager": "Google Secret Manager (gcp-secret-manager)",
    "gcp": "Google Secret Manager (gcp-secret-manager)",
    "aws": "AWS Secrets Manager",
    "vault": "a HashiCorp Vault server",
}


def _apply_auth(auth: Mapping[str, Any] | None, headers: httpx.Headers) -> httpx.Auth | None:
    """Put the credential on the request: headers are updated, basic auth is returned.

    Upstream's inline form `{<name>: {type, provider, key, ...}}` is unwrapped; a secret to be
    read from a cloud `provider` fails naming the service."""
    if not auth:
        return None
    if len(auth) == 1:
        ((name, inner),) = auth.items()
        if isinstance(inner, Mapping) and "type" in inner:
            provider = str(inner.get("provider") or "")
            if provider in _SECRET_PROVIDERS:
                raise ToolError(
                    f"http auth {name!r}: the {inner.get('type')} secret is read from"
                    f" {_SECRET_PROVIDERS[provider]}, which is not available in this installation"
                )
            auth = inner
    extra = auth.get("headers")
    if extra is not None:
        headers.update(_headers(extra))
    kind = str(auth.get("type") or "").lower()
    if kind == "bearer" or (not kind and auth.get("token")):
        token = auth.get("token")
        if not token:
            raise ToolError("bearer auth needs a `token`")
        headers["Authorization"] = f"Bearer {token}"
        return None
    if kind == "basic" or (not kind and auth.get("username")):
        username, password = auth.get("username"), auth.get("password")
        if username is None:
            raise ToolError("basic auth needs a `username`")
        return httpx.BasicAuth(str(username), "" if password is None else str(password))
    if kind or extra is None:
        raise ToolError(f"http auth type {kind or '(none)'!r} is not supported")
    return None


def _verify(raw: Any) -> bool | str:
    """True, False, or the path of a CA bundle."""
    if isinstance(raw, str) and raw.strip().lower() not in _FLAGS:
        return raw
    return _flag(raw, "verify")


def _flag(raw: Any, name: str) -> bool:
    """A boolean field (default true); rendered templates may give "true"/"false"."""
    if raw is None:
        return True
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _FLAGS:
        return _FLAGS[raw.strip().lower()]
    raise ToolError(f"{name} must be true or false, got {raw!r}")


def _decoded(response: httpx.Response, content: bytes) -> str:
    """The body as text, in the response's encoding (its charset, else UTF-8)."""
    try:
        return content.decode(response.encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return content.decode("utf-8", errors="replace")


def _data(response: httpx.Response, text: str) -> Any:
    content_type = response.headers.get("content-type", "").lower()
    if "json" in content_type and text.strip():
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
