"""The ``nats`` tool: publish, request and key/value operations on a NATS server.

Config: ``operation`` (``publish``, ``request``, ``kv_put``, ``kv_get``, ``kv_delete``,
``kv_keys``), ``subject`` (publish/request), ``data`` (alias ``payload``, ``message``; the
message body), ``headers`` (publish/request), ``bucket`` and ``key`` (kv), ``value`` (kv_put),
``jetstream`` (publish: true waits for the stream's ack), ``timeout_seconds`` (default 30).
A mapping or list is sent as JSON; a string as UTF-8. Values read back are parsed as JSON when
they are JSON, else returned as text.

``auth`` (the resolved credential) says where and who: ``nats_url`` (alias ``url``,
``servers``), ``nats_user`` / ``nats_password`` (alias ``user`` / ``password``), ``nats_token``
(alias ``token``). A K/V bucket that does not exist is created on ``kv_put``.

Results: publish ``{status, subject}`` (with ``stream`` and ``seq`` when ``jetstream``);
request ``{status, subject, data}``; kv_put ``{status, bucket, key, revision}``; kv_get
``{status, bucket, key, found, value, revision}`` (a missing key is ``found: false``, not an
error); kv_delete ``{status, bucket, key, deleted}``; kv_keys ``{status, bucket, keys}``.

The tool knows nothing of NoETL's own command stream: it talks to whatever server the
credential names, over its own connections (one per server and user, kept until closed).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

import nats
import nats.aio.transport
from nats.aio.client import Client
from nats.js import errors as js_errors
from nats.js.kv import KeyValue

from noetl.tools.base import ToolCall, ToolError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 30.0
OPERATIONS = ("publish", "request", "kv_put", "kv_get", "kv_delete", "kv_keys")


class NatsTool:
    kind = "nats"
    default_timeout = DEFAULT_TIMEOUT

    def __init__(self) -> None:
        self._clients: dict[tuple[str, str, str, str], Client] = {}
        self._lock = asyncio.Lock()

    async def run(self, call: ToolCall) -> Any:
        config = call.config
        operation = str(config.get("operation") or "")
        if operation not in OPERATIONS:
            raise ToolError(
                f"nats operation must be one of {', '.join(OPERATIONS)}; got {operation!r}"
            )
        timeout = call.time_limit(DEFAULT_TIMEOUT)
        client = await self._client(call.auth, config, timeout)
        try:
            return await asyncio.wait_for(_OPERATIONS[operation](client, config, timeout), timeout)
        except TimeoutError:
            raise ToolError(
                f"nats {operation} timed out after {timeout:g} s", retryable=True
            ) from None
        except ToolError:
            raise
        except (nats.errors.Error, js_errors.Error) as exc:
            reason = str(exc) or type(exc).__name__
            raise ToolError(f"nats {operation} failed: {reason}", retryable=True) from None

    async def _client(
        self, auth: Mapping[str, Any] | None, config: Mapping[str, Any], limit: float
    ) -> Client:
        timeout = limit
        data = dict(auth or {})
        url = _first(data, "nats_url", "url", "servers") or _first(config, "nats_url", "url")
        if not url:
            raise ToolError(
                "nats tool needs a server: `auth` naming a NATS credential with nats_url"
                " (and nats_user/nats_password or nats_token when the server wants them)"
            )
        user = _first(data, "nats_user", "user", "username") or ""
        password = _first(data, "nats_password", "password") or ""
        token = _first(data, "nats_token", "token") or ""
        key = (str(url), str(user), str(password), str(token))
        async with self._lock:
            client = self._clients.get(key)
            if client is not None and client.is_connected:
                return client
            if "ws://" in str(url) or "wss://" in str(url):
                _websocket_transport()
            try:
                client = await nats.connect(
                    str(url),
                    user=str(user) or None,
                    password=str(password) or None,
                    token=str(token) or None,
                    connect_timeout=min(timeout, 10.0),
                    max_reconnect_attempts=2,
                    allow_reconnect=True,
                )
            except Exception as exc:  # nats raises several unrelated types for a failed connect
                reason = str(exc) or type(exc).__name__
                raise ToolError(
                    f"nats: cannot connect to {url}: {reason}", retryable=True
                ) from None
            self._clients[key] = client
            return client

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                await client.close()
            except Exception:  # closing one must not keep the others open
                logger.debug("closing a nats client failed", exc_info=True)


def _websocket_transport() -> None:
    """nats-py's WebSocket transport with its aiohttp: NoETL's bus loaded nats-py without it
    (`noetl.bus`); the transport's module, run again, finds it now."""
    if getattr(nats.aio.transport, "aiohttp", None) is None:
        importlib.reload(nats.aio.transport)


def _first(data: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = data.get(name)
        if value not in (None, ""):
            if isinstance(value, list):
                return ",".join(str(v) for v in value)
            return value
    return None


def _required(config: Mapping[str, Any], name: str, operation: str) -> str:
    value = config.get(name)
    if value is None or value == "":
        raise ToolError(f"nats {operation} needs `{name}`")
    return str(value)


def encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if value is None:
        return b""
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def decode(raw: bytes | None) -> Any:
    if raw is None:
        return None
    text = raw.decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _body(config: Mapping[str, Any]) -> bytes:
    for name in ("data", "payload", "message"):
        if name in config:
            return encode(config[name])
    return b""


def _headers(config: Mapping[str, Any]) -> dict[str, str] | None:
    headers = config.get("headers")
    if not headers:
        return None
    if not isinstance(headers, Mapping):
        raise ToolError("nats headers must be a mapping")
    return {str(k): str(v) for k, v in headers.items()}


async def _publish(client: Client, config: Mapping[str, Any], limit: float) -> Any:
    timeout = limit
    subject = _required(config, "subject", "publish")
    body, headers = _body(config), _headers(config)
    if config.get("jetstream") in (True, "true"):
        ack = await client.jetstream().publish(subject, body, timeout=timeout, headers=headers)
        return {"status": "ok", "subject": subject, "stream": ack.stream, "seq": ack.seq}
    await client.publish(subject, body, headers=headers)
    await client.flush(timeout=max(1, int(timeout)))
    return {"status": "ok", "subject": subject}


async def _request(client: Client, config: Mapping[str, Any], limit: float) -> Any:
    timeout = limit
    subject = _required(config, "subject", "request")
    try:
        reply = await client.request(
            subject, _body(config), timeout=timeout, headers=_headers(config)
        )
    except nats.errors.NoRespondersError:
        raise ToolError(f"nats request to {subject!r}: no responders") from None
    return {"status": "ok", "subject": subject, "data": decode(reply.data)}


async def _bucket(client: Client, config: Mapping[str, Any], operation: str) -> KeyValue:
    name = _required(config, "bucket", operation)
    js = client.jetstream()
    try:
        return await js.key_value(name)
    except js_errors.BucketNotFoundError:
        if operation != "kv_put":
            raise ToolError(f"nats {operation}: bucket {name!r} does not exist") from None
    except js_errors.InvalidBucketNameError:
        raise ToolError(f"nats {operation}: invalid bucket name {name!r}") from None
    logger.info("creating nats key/value bucket %s", name)
    return await js.create_key_value(bucket=name)


# the keys JetStream K/V takes (nats-py checks the same on put, after the bucket exists)
_KEY = re.compile(r"[-/_=.a-zA-Z0-9]+")


async def _kv_put(client: Client, config: Mapping[str, Any], limit: float) -> Any:
    key = _required(config, "key", "kv_put")  # a call refused creates no bucket
    if not isinstance(key, str) or not _KEY.fullmatch(key) or key[0] == "." or key[-1] == ".":
        raise ToolError(f"nats kv_put: invalid key {key!r}")
    kv = await _bucket(client, config, "kv_put")
    try:
        revision = await kv.put(key, encode(config.get("value")))
    except js_errors.InvalidKeyError:
        raise ToolError(f"nats kv_put: invalid key {key!r}") from None
    return {"status": "ok", "bucket": config["bucket"], "key": key, "revision": revision}


async def _kv_get(client: Client, config: Mapping[str, Any], limit: float) -> Any:
    kv = await _bucket(client, config, "kv_get")
    key = _required(config, "key", "kv_get")
    try:
        entry = await kv.get(key)
    except (js_errors.KeyNotFoundError, js_errors.KeyDeletedError):
        return {
            "status": "ok",
            "bucket": config["bucket"],
            "key": key,
            "found": False,
            "value": None,
            "revision": None,
        }
    except js_errors.InvalidKeyError:
        raise ToolError(f"nats kv_get: invalid key {key!r}") from None
    return {
        "status": "ok",
        "bucket": config["bucket"],
        "key": key,
        "found": True,
        "value": decode(entry.value),
        "revision": entry.revision,
    }


async def _kv_delete(client: Client, config: Mapping[str, Any], limit: float) -> Any:
    kv = await _bucket(client, config, "kv_delete")
    key = _required(config, "key", "kv_delete")
    try:
        await kv.delete(key)
    except js_errors.InvalidKeyError:
        raise ToolError(f"nats kv_delete: invalid key {key!r}") from None
    return {"status": "ok", "bucket": config["bucket"], "key": key, "deleted": True}


async def _kv_keys(client: Client, config: Mapping[str, Any], limit: float) -> Any:
    kv = await _bucket(client, config, "kv_keys")
    try:
        keys = await kv.keys()
    except js_errors.NoKeysError:
        keys = []
    return {"status": "ok", "bucket": config["bucket"], "keys": sorted(keys)}


_OPERATIONS = {
    "publish": _publish,
    "request": _request,
    "kv_put": _kv_put,
    "kv_get": _kv_get,
    "kv_delete": _kv_delete,
    "kv_keys": _kv_keys,
}
