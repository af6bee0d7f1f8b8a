"""The http tool against a real local HTTP server (aiohttp, 127.0.0.1, a free port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from noetl.tools import ToolCall, ToolError
from noetl.tools.http import HttpTool, safe_url


async def _json(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "query": dict(request.query)})


async def _text(_: web.Request) -> web.Response:
    return web.Response(text="plain words")


async def _missing(_: web.Request) -> web.Response:
    return web.Response(status=404, text="no such page")


async def _broken(_: web.Request) -> web.Response:
    return web.Response(status=500, text="server fell over")


async def _busy(_: web.Request) -> web.Response:
    return web.Response(status=429, text="slow down")


async def _slow(_: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.Response(text="late")


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "authorization": request.headers.get("Authorization"),
            "x_extra": request.headers.get("X-Extra"),
            "content_type": request.headers.get("Content-Type"),
            "body": body.decode(),
        }
    )


async def _endless(request: web.Request) -> web.StreamResponse:
    """A body that never ends (chunked): the tool must stop reading, not fill the memory."""
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    chunk = b"x" * 65536
    while True:
        await response.write(chunk)


async def _compressed(_: web.Request) -> web.Response:
    """100 KB of zeros in a few hundred gzip bytes: the limit is on what it unpacks to."""
    import gzip

    body = gzip.compress(b"0" * 100_000)
    return web.Response(body=body, headers={"Content-Encoding": "gzip"})


async def _redirect(_: web.Request) -> web.Response:
    raise web.HTTPFound("/json")


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.add_routes(
        [
            web.get("/json", _json),
            web.get("/text", _text),
            web.get("/missing", _missing),
            web.get("/broken", _broken),
            web.get("/busy", _busy),
            web.get("/slow", _slow),
            web.route("*", "/echo", _echo),
            web.get("/redirect", _redirect),
            web.get("/endless", _endless),
            web.get("/compressed", _compressed),
        ]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


@pytest.fixture(scope="module")
async def tool() -> AsyncIterator[HttpTool]:
    value = HttpTool()
    yield value
    await value.close()


async def request(
    tool: HttpTool, auth: dict[str, Any] | None = None, **config: Any
) -> dict[str, Any]:
    result: dict[str, Any] = await tool.run(ToolCall("http", config, {}, 1, "step", auth=auth))
    return result


async def request_error(
    tool: HttpTool, auth: dict[str, Any] | None = None, **config: Any
) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await request(tool, auth, **config)
    return caught.value


@pytest.mark.timeout(30)
async def test_a_json_response_is_parsed_into_data(tool: HttpTool, base_url: str) -> None:
    result = await request(tool, url=f"{base_url}/json", params={"page": 2})
    assert result["status_code"] == 200
    assert result["data"] == {"ok": True, "query": {"page": "2"}}
    assert result["headers"]["content-type"].startswith("application/json")


@pytest.mark.timeout(30)
async def test_a_text_response_is_returned_as_text(tool: HttpTool, base_url: str) -> None:
    result = await request(tool, url=f"{base_url}/text")
    assert result["status_code"] == 200
    assert result["data"] == "plain words"


@pytest.mark.timeout(30)
async def test_a_404_is_an_error_that_is_not_retried(tool: HttpTool, base_url: str) -> None:
    error = await request_error(tool, url=f"{base_url}/missing?api_key=secret-value")
    assert str(error) == f"GET {base_url}/missing returned HTTP 404: no such page"
    assert "secret-value" not in str(error)
    assert not error.retryable
    assert error.details["status_code"] == 404
    assert error.details["data"] == "no such page"


@pytest.mark.timeout(30)
async def test_a_500_is_a_retryable_error(tool: HttpTool, base_url: str) -> None:
    error = await request_error(tool, url=f"{base_url}/broken", method="get")
    assert "HTTP 500" in str(error) and "server fell over" in str(error)
    assert error.retryable


@pytest.mark.timeout(30)
async def test_a_429_is_a_retryable_error(tool: HttpTool, base_url: str) -> None:
    error = await request_error(tool, url=f"{base_url}/busy")
    assert error.retryable


@pytest.mark.timeout(30)
async def test_a_timeout_is_a_retryable_error_naming_the_url(tool: HttpTool, base_url: str) -> None:
    started = asyncio.get_running_loop().time()
    error = await request_error(tool, url=f"{base_url}/slow", timeout_seconds=0.3)
    assert asyncio.get_running_loop().time() - started < 3
    assert str(error) == f"GET {base_url}/slow timed out after 0.3 s"
    assert error.retryable


@pytest.mark.timeout(30)
async def test_a_refused_connection_is_a_retryable_error(tool: HttpTool, base_url: str) -> None:
    error = await request_error(tool, url="http://127.0.0.1:1/nothing", timeout=5)
    assert "http://127.0.0.1:1/nothing" in str(error)
    assert error.retryable


@pytest.mark.timeout(30)
async def test_bearer_auth_arrives_as_the_authorization_header(
    tool: HttpTool, base_url: str
) -> None:
    auth = {"type": "bearer", "token": "t0ken", "headers": {"X-Extra": "yes"}}
    result = await request(tool, auth, url=f"{base_url}/echo", headers={"authorization": "old"})
    assert result["data"]["authorization"] == "Bearer t0ken"
    assert result["data"]["x_extra"] == "yes"


@pytest.mark.timeout(30)
async def test_basic_auth_arrives_encoded(tool: HttpTool, base_url: str) -> None:
    auth = {"type": "basic", "username": "ann", "password": "pw"}
    result = await request(tool, auth, url=f"{base_url}/echo")
    assert result["data"]["authorization"] == "Basic YW5uOnB3"


@pytest.mark.timeout(30)
async def test_bodies_are_sent_as_json_text_or_form(tool: HttpTool, base_url: str) -> None:
    as_json = await request(tool, url=f"{base_url}/echo", method="POST", json={"a": 1})
    assert as_json["data"]["body"] == '{"a":1}' or as_json["data"]["body"] == '{"a": 1}'
    assert as_json["data"]["content_type"] == "application/json"
    as_text = await request(tool, url=f"{base_url}/echo", method="PUT", body="raw text")
    assert as_text["data"]["method"] == "PUT" and as_text["data"]["body"] == "raw text"
    data_dict = await request(tool, url=f"{base_url}/echo", method="POST", data={"b": [1]})
    assert data_dict["data"]["content_type"] == "application/json"
    form = await request(tool, url=f"{base_url}/echo", method="POST", form={"x": "1 2"})
    assert form["data"]["body"] == "x=1+2"
    assert form["data"]["content_type"] == "application/x-www-form-urlencoded"


@pytest.mark.timeout(30)
async def test_redirects_are_followed_unless_turned_off(tool: HttpTool, base_url: str) -> None:
    followed = await request(tool, url=f"{base_url}/redirect")
    assert followed["data"]["ok"] is True
    error = await request_error(tool, url=f"{base_url}/redirect", follow_redirects=False)
    assert error.details["status_code"] == 302


@pytest.mark.timeout(30)
async def test_the_client_is_shared_across_calls(tool: HttpTool, base_url: str) -> None:
    await request(tool, url=f"{base_url}/text")
    clients = dict(tool._clients)
    await request(tool, url=f"{base_url}/text")
    assert tool._clients == clients and len(clients) == 1


def test_urls_in_messages_drop_credentials_and_query() -> None:
    assert safe_url("https://u:p@example.com:8443/a/b?token=x#f") == "https://example.com:8443/a/b"


async def test_a_response_body_past_the_limit_fails_the_call_without_reading_the_rest(
    base_url: str,
) -> None:
    """An endless or inflating body fails the step naming the limit; the worker's memory is
    not what bounds it (NOETL_MAX_RESPONSE_BYTES)."""
    small = HttpTool(max_response_bytes=50_000)
    try:
        for path, limit in [("/endless", 50_000), ("/compressed", 50_000)]:
            error = await request_error(small, url=f"{base_url}{path}")
            assert f"larger than {limit:,} bytes" in str(error), error
            assert "NOETL_MAX_RESPONSE_BYTES" in str(error) and not error.retryable
        fits = await request(small, url=f"{base_url}/json")
        assert fits["data"]["ok"] is True
    finally:
        await small.close()
    roomy = HttpTool(max_response_bytes=200_000)
    try:
        unpacked = await request(roomy, url=f"{base_url}/compressed")
        assert unpacked["data"] == "0" * 100_000
    finally:
        await roomy.close()
