"""Results kept by reference: NATS key/value (small), NATS object store (large), local disk.

A step's `output` block (`select`/`output_select`, `store: {kind}`, `inline_max_bytes`) or a
result larger than the inline limit makes the worker store the whole result here and report
a stub instead: the selected fields plus

    _ref:   {kind: result_ref, store, bucket, key, size, execution_id, step}
    _store: kv | object | disk

Later steps read a stub's fields as usual; a step whose templates read a stored result gets
it resolved on the worker before its tools run (`resolve_refs`), and the `artifact` tool
loads one explicitly. `auto` picks `kv` up to `KV_MAX_BYTES`, else `object`; `disk` keeps the
file under `NOETL_HOME/results` (only for workers that share that folder). Cloud stores (gcs,
s3) fail naming the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import errors as js_errors

from noetl.tools import output
from noetl.tools.base import ToolError

log = logging.getLogger(__name__)

KV_BUCKET = "noetl_results"
OBJECT_BUCKET = "noetl_results_large"
KV_MAX_BYTES = 512 * 1024
_CLOUD = {"gcs": "Google Cloud Storage (gcs)", "s3": "Amazon S3 (s3)"}
_SAFE = re.compile(r"[^A-Za-z0-9_=.-]")


class ResultStore:
    def __init__(self, nats_url: str | None, home: Path) -> None:
        self.nats_url = nats_url
        self.folder = home / "results"
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def _nats(self) -> Client:
        async with self._lock:
            if self._client is not None and self._client.is_connected:
                return self._client
            if not self.nats_url:
                raise ToolError("the result store needs NATS (NOETL_NATS_URL is not set)")
            try:
                self._client = await nats.connect(self.nats_url, max_reconnect_attempts=2)
            except Exception as exc:  # nats raises several unrelated types for a failed connect
                raise ToolError(f"result store: cannot reach NATS: {exc}", retryable=True) from None
            return self._client

    async def put(self, value: Any, *, store: str, execution_id: int, step: str) -> dict[str, Any]:
        """Store `value`, the command's secrets masked (`output.concealed`: the store is outside
        the worker, and the outcome's masking comes too late for it); return its reference."""
        data = json.dumps(output.concealed(value), separators=(",", ":"), default=str).encode()
        kind = store
        if kind in {"auto", "memory"}:
            kind = "kv" if len(data) <= KV_MAX_BYTES else "object"
        if kind in _CLOUD:
            raise ToolError(
                f"output store {kind} needs {_CLOUD[kind]}, which is not available in this"
                " installation"
            )
        key = _SAFE.sub("_", f"{execution_id}.{step}.{uuid.uuid4().hex}")
        if kind == "kv" and len(data) > KV_MAX_BYTES:
            kind = "object"  # NATS messages are bounded: a large value goes to the object store
        if kind == "kv":
            kv = await self._kv(create=True)
            await kv.put(key, data)
            bucket = KV_BUCKET
        elif kind == "object":
            objects = await self._objects(create=True)
            await objects.put(key, data)
            bucket = OBJECT_BUCKET
        elif kind == "disk":
            path = self.folder / f"{key}.json"
            await asyncio.to_thread(_write, path, data)
            bucket = str(self.folder)
        else:
            raise ToolError(f"unknown output store {store!r}")
        return {
            "kind": "result_ref",
            "store": kind,
            "bucket": bucket,
            "key": key,
            "size": len(data),
            "execution_id": str(execution_id),
            "step": step,
        }

    async def get(self, ref: Any) -> Any:
        """The value a reference points at."""
        if not is_ref(ref):
            raise ToolError(f"not a result reference: {str(ref)[:200]}")
        store, key = ref["store"], str(ref["key"])
        try:
            if store == "kv":
                entry = await (await self._kv(create=False)).get(key)
                raw = entry.value or b""
            elif store == "object":
                result = await (await self._objects(create=False)).get(key)
                raw = result.data or b""
            elif store == "disk":
                raw = await asyncio.to_thread((self.folder / f"{key}.json").read_bytes)
            else:
                raise ToolError(f"unknown result store {store!r}")
        except (js_errors.KeyNotFoundError, js_errors.ObjectNotFoundError, FileNotFoundError):
            raise ToolError(f"stored result {key} ({store}) no longer exists") from None
        return json.loads(raw)

    async def _kv(self, *, create: bool) -> Any:
        js = (await self._nats()).jetstream()
        try:
            return await js.key_value(KV_BUCKET)
        except js_errors.BucketNotFoundError:
            if not create:
                raise ToolError(f"result store bucket {KV_BUCKET} does not exist") from None
            return await js.create_key_value(bucket=KV_BUCKET)

    async def _objects(self, *, create: bool) -> Any:
        js = (await self._nats()).jetstream()
        try:
            return await js.object_store(OBJECT_BUCKET)
        except js_errors.BucketNotFoundError:
            if not create:
                raise ToolError(f"result store bucket {OBJECT_BUCKET} does not exist") from None
            return await js.create_object_store(bucket=OBJECT_BUCKET)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.close()
            except Exception:  # already closed or NATS gone: nothing to release
                log.debug("closing the result store's NATS client failed", exc_info=True)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def is_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("kind") == "result_ref" and "key" in value


def is_stub(value: Any) -> bool:
    """A result reported by reference: a mapping with a `_ref`."""
    return isinstance(value, Mapping) and is_ref(value.get("_ref"))


def select(value: Any, fields: Any) -> dict[str, Any]:
    """The named top-level fields of a result (those it has)."""
    if not isinstance(value, Mapping) or not isinstance(fields, list):
        return {}
    return {str(name): value[name] for name in fields if name in value}


async def resolve_refs(value: Any, store: ResultStore) -> Any:
    """`value` with every stub replaced by its stored data (stub fields kept on top), so
    `{{ step.field }}` finds any field of a result that travelled by reference. Every mapping
    and list is a copy. (Most values hold no stub: they are copied without a coroutine per
    node; a worker does this for every command's input.)"""
    try:
        return _copied(value)
    except _HoldsStub:
        return await _resolved(value, store)


class _HoldsStub(Exception):
    """`_copied` met a stub: the value needs the store."""


def _copied(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if isinstance(value, Mapping):
        if "_ref" in value and is_stub(value):
            raise _HoldsStub
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value


async def _resolved(value: Any, store: ResultStore) -> Any:
    if is_stub(value):
        full = await store.get(value["_ref"])
        if isinstance(full, Mapping):
            return {**full, **value}
        return full
    if isinstance(value, Mapping):
        return {k: await _resolved(v, store) for k, v in value.items()}
    if isinstance(value, list):
        return [await _resolved(v, store) for v in value]
    return value
