"""A small HTTP/1.1 client for the worker's requests to the server: keep-alive connections,
JSON bodies, one request at a time per connection.

Why not aiohttp: a worker makes one request per step (its report), and on this machine an
aiohttp POST cost the worker ~390 us of CPU, a third of what the worker spends per step; the
request here is one write of prepared bytes, and the answer is parsed by httptools (C, the
parser uvicorn uses): ~60 us (benchmarks/README.md). It does only what the worker needs:
http and https, a path prefix in the base URL, a Bearer token, bodies of any size, answers
with Content-Length or chunked, a total time limit per request. No proxies (aiohttp did not
use them either: `trust_env` was off), no redirects, no cookies.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from urllib.parse import urlsplit

import httptools


class Unreachable(Exception):
    """No answer: connection refused, reset or closed, or the time limit passed."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a request written, its answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.parts: list[bytes] = []
        self.open = False
        self.reusable = False  # open, and its last answer complete and keep-alive
        self.heard = False  # some of the answer to the current request arrived
        self.headed = False  # its head was complete
        self.delimited = False  # its body's end is given (Content-Length or chunked), not EOF

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        self.heard = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Unreachable(f"malformed answer: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        if self.headed and not self.delimited:  # a body that ends with the connection
            self.on_message_complete()
        return False  # the transport closes itself; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.reusable = False
        self._fail(Unreachable(f"connection closed: {exc}" if exc else "connection closed"))

    # -- httptools callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.delimited = True

    def on_headers_complete(self) -> None:
        self.headed = True

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        answer, self.answer = self.answer, None
        body, self.parts = b"".join(self.parts), []
        self.reusable = self.open and self.parser.should_keep_alive()
        if answer is not None and not answer.done():
            answer.set_result((self.parser.get_status_code(), body))
        if not self.reusable:
            self.close()

    # -- the client's side --------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.answer = self.loop.create_future()
        self.reusable = self.heard = self.headed = self.delimited = False
        self.transport.write(request)
        return self.answer

    def _fail(self, error: Exception) -> None:
        answer, self.answer = self.answer, None
        if answer is not None and not answer.done():
            answer.set_exception(error)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


class HTTPClient:
    """Requests to one server (`base_url`), over at most `limit` connections at once."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
        limit: int = 64,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in {"http", "https"} or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        https = url.scheme == "https"
        self.host = url.hostname
        self.port = url.port or (443 if https else 80)
        self.ssl = ssl.create_default_context() if https else None
        self.prefix = url.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if url.port in (None, 443 if https else 80) else f"{host}:{self.port}"
        lines = [f"Host: {authority}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self._head = "".join(f"{line}\r\n" for line in lines).encode("latin-1")
        self.timeout = timeout
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)  # (bound to the loop of its first use)
        self._loop: asyncio.AbstractEventLoop | None = None  # that loop, asked for once:
        # asyncio.get_running_loop() makes a getpid() system call

    async def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        """The answer's status and body; Unreachable when there is none."""
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._head
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n".encode()
        request = head + b"\r\n" + body if body is not None else head + b"\r\n"
        await self._slots.acquire()  # (not `async with`: two coroutines less per request)
        try:
            loop = self._loop or self._bind()
            return await self._exchange(loop, request, loop.time() + self.timeout)
        except TimeoutError:
            raise Unreachable(f"TimeoutError: no answer in {self.timeout:g} s") from None
        except OSError as exc:  # refused, unreachable, reset
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None
        finally:
            self._slots.release()

    def _bind(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    async def _exchange(
        self, loop: asyncio.AbstractEventLoop, request: bytes, deadline: float
    ) -> tuple[int, bytes]:
        """The answer by `deadline` (TimeoutError after it). The wait for an answer has a timer
        of its own rather than `asyncio.timeout` around all of this: that costs three times as
        much (a context manager in Python, a task's cancellation), for every report."""
        again = True
        while True:
            connection = self._idle_connection()
            reused = connection is not None
            if connection is None:
                async with asyncio.timeout_at(deadline):
                    _, connection = await loop.create_connection(
                        functools.partial(_Connection, loop), self.host, self.port, ssl=self.ssl
                    )
            answer = connection.send(request)
            timer = loop.call_at(deadline, _expire, answer)
            try:
                result = await answer
            except Unreachable:
                if reused and again and not connection.heard:  # closed by the server while
                    again = False  # idle, as the request went: once more, on a new connection
                    continue
                raise
            except BaseException:  # cancelled or timed out: its late answer is nobody's
                connection.close()
                raise
            finally:
                timer.cancel()
            if connection.reusable:
                self._idle.append(connection)
            return result

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
        return None

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        await asyncio.sleep(0)  # the transports close on the next loop iteration


def _expire(answer: asyncio.Future[tuple[int, bytes]]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())
