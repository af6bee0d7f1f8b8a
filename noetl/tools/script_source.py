"""Where a tool's code comes from: upstream's ``script:`` block (python, postgres, duckdb).

    script:
      uri: path/or/name.py
      source: {type: inline | file | http | gcs | s3, ...}

- ``inline``: ``source.code`` (or ``script.code``).
- ``file``: the file at ``uri`` on the worker (a relative path is taken from the worker's
  working directory).
- ``http``: GET (or ``source.method``) ``source.endpoint`` (else ``uri``), with
  ``source.headers`` and ``source.timeout`` (seconds, default 30); a non-2xx answer fails.
- ``gcs``, ``s3``: need a cloud store; they fail naming the store and the object.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from noetl.tools.base import ToolError

DEFAULT_TIMEOUT = 30.0
MAX_SCRIPT_BYTES = 10 * 1024 * 1024
_CLOUD = {
    "gcs": ("gs://", "Google Cloud Storage (gcs)"),
    "s3": ("s3://", "Amazon S3 (s3)"),
}


def source_type(script: Mapping[str, Any]) -> str:
    source = script.get("source")
    kind = source.get("type") if isinstance(source, Mapping) else None
    return str(kind or ("inline" if "code" in script else "file"))


async def load_script(script: Any, tool: str) -> str:
    """The text a ``script`` block points at; ToolError naming the source when it fails."""
    if isinstance(script, str):
        return script
    if not isinstance(script, Mapping):
        raise ToolError(f"{tool} script must be a mapping with uri and source")
    source = script.get("source") if isinstance(script.get("source"), Mapping) else {}
    assert isinstance(source, Mapping)
    kind = source_type(script)
    uri = str(script.get("uri") or source.get("uri") or "")
    if kind == "inline":
        code = source.get("code", script.get("code"))
        if not isinstance(code, str):
            raise ToolError(f"{tool} script source inline needs `code`")
        return code
    if kind == "file":
        return await _file(uri, tool)
    if kind == "http":
        return await _http(uri, source, tool)
    if kind in _CLOUD:
        scheme, store = _CLOUD[kind]
        bucket = str(source.get("bucket") or script.get("bucket") or "")
        location = uri if uri.startswith(scheme) else f"{scheme}{bucket}/{uri.lstrip('/')}"
        raise ToolError(
            f"{tool} script source {kind} ({location}) needs {store}, which is not available"
            " in this installation"
        )
    raise ToolError(f"{tool} script source type {kind!r} is not supported")


async def _file(uri: str, tool: str) -> str:
    if not uri:
        raise ToolError(f"{tool} script source file needs `uri` (the path)")

    def read() -> str:
        path = Path(uri).expanduser()
        if path.stat().st_size > MAX_SCRIPT_BYTES:
            raise ToolError(f"{tool} script file {uri} is larger than {MAX_SCRIPT_BYTES} bytes")
        return path.read_text()

    try:
        return await asyncio.to_thread(read)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ToolError(f"{tool} script file {uri}: {reason}") from None


async def _http(uri: str, source: Mapping[str, Any], tool: str) -> str:
    url = str(source.get("endpoint") or source.get("url") or uri)
    if not url.startswith(("http://", "https://")):
        raise ToolError(f"{tool} script source http needs `endpoint` (a URL), got {url!r}")
    try:
        timeout = float(source.get("timeout") or DEFAULT_TIMEOUT)
    except (TypeError, ValueError):
        raise ToolError(f"{tool} script source timeout must be a number") from None
    headers = source.get("headers") if isinstance(source.get("headers"), Mapping) else {}
    method = str(source.get("method") or "GET").upper()
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client:
            response = await client.request(method, url, headers=dict(headers or {}))
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise ToolError(f"{tool} script from {url}: {reason}", retryable=True) from None
    if not response.is_success:
        raise ToolError(
            f"{tool} script from {url}: HTTP {response.status_code}",
            retryable=response.status_code >= 500,
        )
    return response.text
