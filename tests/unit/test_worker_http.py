"""The worker's HTTP client (`worker.http`, under `worker.client`) against servers that answer
as real ones do: keep-alive, chunked answers, idle connections closed by the server, a path
prefix, a token, large bodies, no server, no answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from noetl.worker.client import ServerClient, ServerUnreachable
from noetl.worker.http import HTTPClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    line, *fields = head.split("\r\n")[:-2]
    headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return line, headers, body


@pytest.fixture
async def echo_app() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """An aiohttp server that answers with what it got, and the requests it saw."""
    seen: list[web.Request] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        body = await request.read()
        if request.query.get("chunked"):
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(body), 1000):
                await response.write(body[start : start + 1000])
            await response.write_eof()
            return response
        return web.Response(body=body, content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/prefix/api/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/prefix/", seen
    finally:
        await runner.cleanup()


async def test_requests_carry_the_prefix_the_token_and_bodies_of_any_size(
    echo_app: tuple[str, list[web.Request]],
) -> None:
    url, seen = echo_app
    client = ServerClient(url, token="t0k")
    try:
        big = {"text": "x" * (5 * 1024 * 1024)}
        answer = await client.heartbeat(big)
        chunked = await client._request("POST", "/api/x?chunked=1", {"n": list(range(5000))})
        got = await client._request("GET", "/api/credentials/a?include_data=true", None)
    finally:
        await client.close()
    assert (answer.status, answer.body) == (200, big)
    assert (chunked.status, chunked.body) == (200, {"n": list(range(5000))})
    assert (got.status, got.body) == (200, None)
    assert [r.path for r in seen] == [
        "/prefix/api/workers/heartbeat",
        "/prefix/api/x",
        "/prefix/api/credentials/a",
    ]
    assert {r.headers["Authorization"] for r in seen} == {"Bearer t0k"}
    assert seen[2].query["include_data"] == "true"


async def test_one_connection_carries_sequential_requests() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                _, _, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        writer.close()

    server, port = await serve(handler)
    client = HTTPClient(f"http://127.0.0.1:{port}")
    try:
        for n in range(5):
            assert await client.request("POST", "/", b"%d" % n, "text/plain") == (200, b"%d" % n)
    finally:
        await client.close()
        server.close()
    assert connections == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error() -> None:
    """uvicorn closes a keep-alive connection idle for 5 s; a request that meets the closing
    connection goes again on a new one (once: the server never answered it)."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if connections == 1:  # the first connection: closed at the next request, unanswered
            await reader.read(1)
        writer.close()

    server, port = await serve(handler)
    client = HTTPClient(f"http://127.0.0.1:{port}")
    try:
        assert await client.request("GET", "/") == (200, b"ok")
        assert await client.request("GET", "/") == (200, b"ok")
        assert await client.request("GET", "/") == (200, b"ok")
    finally:
        await client.close()
        server.close()
    assert connections == 3


async def test_an_answer_with_connection_close_is_not_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 503 Unavailable\r\nConnection: close\r\n\r\nlater")
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    client = ServerClient(f"http://127.0.0.1:{port}")
    try:
        for _ in range(2):
            answer = await client.heartbeat({})
            assert (answer.status, answer.body) == (503, "later")
    finally:
        await client.close()
        server.close()
    assert connections == 2


async def test_no_server_and_no_answer_are_unreachable() -> None:
    server, port = await serve(lambda reader, writer: asyncio.sleep(30))
    server.close()
    await server.wait_closed()
    refused = ServerClient(f"http://127.0.0.1:{port}")
    with pytest.raises(ServerUnreachable):
        await refused.heartbeat({})
    await refused.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    server, port = await serve(silent)
    client = ServerClient(f"http://127.0.0.1:{port}", timeout=0.3)
    try:
        with pytest.raises(ServerUnreachable, match="TimeoutError"):
            await client.heartbeat({})
    finally:
        await client.close()
        server.close()


async def test_a_connection_closed_mid_answer_is_unreachable_and_not_retried() -> None:
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        requests += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    server, port = await serve(handler)
    client = ServerClient(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ServerUnreachable):
            await client.report_many([])
    finally:
        await client.close()
        server.close()
    assert requests == 1


async def test_a_cancelled_request_does_not_leave_its_answer_to_the_next() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                _, _, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            if body == b"slow":
                await asyncio.sleep(0.3)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    server, port = await serve(handler)
    client = HTTPClient(f"http://127.0.0.1:{port}")
    try:
        slow = asyncio.create_task(client.request("POST", "/", b"slow", "text/plain"))
        await asyncio.sleep(0.1)
        slow.cancel()
        await asyncio.sleep(0.4)  # the slow answer arrives on the (closed) connection
        assert await client.request("POST", "/", b"fast", "text/plain") == (200, b"fast")
    finally:
        await client.close()
        server.close()


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        HTTPClient("nats://127.0.0.1:4222")
