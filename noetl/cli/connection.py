"""How the CLI reaches a server: the global `--server` / `--token` / `-v` options, HTTP
clients that send the token, and one answer for a server that does not answer (exit 3).

The server expects `Authorization: Bearer <NOETL_API_TOKEN>` on every route but `/health`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import httpx
import typer
from rich.console import Console

from noetl.config import Settings
from noetl.errors import NoetlError

UNREACHABLE = 3  # exit code: no server at the URL

err = Console(stderr=True, soft_wrap=True)


@dataclass
class Connection:
    """What the global options said; None falls back to the settings (environment)."""

    server: str | None = None
    token: str | None = None
    verbose: bool = False

    def url(self, settings: Settings) -> str:
        return (self.server or settings.server_url).rstrip("/")

    def headers(self, settings: Settings) -> dict[str, str]:
        token = self.token or settings.api_token
        return {"Authorization": f"Bearer {token}"} if token else {}


CONNECTION = Connection()


class ServerUnreachable(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return "connection refused" if "refused" in text.lower() else text
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    return text


class Client(httpx.Client):
    """An httpx client whose transport failures are `ServerUnreachable`."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        try:
            return super().send(request, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(str(self.base_url).rstrip("/"), _reason(exc)) from exc


class AsyncClient(httpx.AsyncClient):
    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        try:
            return await super().send(request, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnreachable(str(self.base_url).rstrip("/"), _reason(exc)) from exc


def client(settings: Settings, *, timeout: float = 30) -> Client:
    return Client(
        base_url=CONNECTION.url(settings), headers=CONNECTION.headers(settings), timeout=timeout
    )


def async_client(settings: Settings, *, timeout: float = 30) -> AsyncClient:
    return AsyncClient(
        base_url=CONNECTION.url(settings), headers=CONNECTION.headers(settings), timeout=timeout
    )


class App(typer.Typer):
    """The `noetl` app: an error that escapes a command is one line (and an exit code), not a
    traceback, unless `-v` asked for it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ServerUnreachable as exc:
            if CONNECTION.verbose:
                raise
            err.print(
                f"[red]error:[/] no NoETL server answers at {exc.url} ({exc.reason}); start one"
                " with `noetl server start` (or `noetl ui`), or point --server / SERVER_API_URL"
                " at it",
                highlight=False,
            )
            sys.exit(UNREACHABLE)
        except NoetlError as exc:  # said on purpose: the message is the whole story
            if CONNECTION.verbose:
                raise
            err.print(f"[red]error:[/] {exc}", highlight=False)
            sys.exit(2)
        except Exception as exc:
            if CONNECTION.verbose:
                raise
            err.print(
                f"[red]error:[/] {type(exc).__name__}: {exc}"
                " (run `noetl -v ...` for the traceback)",
                highlight=False,
            )
            sys.exit(1)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one error line; the caller raises the returned Exit."""
    err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def check(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 2xx answer; otherwise one line with the server's message (and the
    problems of an invalid playbook), exit 2 (1 for a refused token)."""
    if response.status_code < 400:
        body: dict[str, Any] = response.json()
        return body
    code = 1 if response.status_code in {401, 403} else 2
    try:
        parsed = response.json()
    except ValueError:
        raise fail(f"HTTP {response.status_code}: {response.text[:500]}", code) from None
    for problem in parsed.get("problems", []) if isinstance(parsed, dict) else []:
        if problem.get("line"):
            err.print(f"  line {problem['line']}: {problem.get('field')}: {problem['message']}")
    message = parsed.get("message", parsed) if isinstance(parsed, dict) else parsed
    if response.status_code == 401:
        message = f"{message or 'Unauthorized'} (give the API token: --token or NOETL_API_TOKEN)"
    raise fail(f"HTTP {response.status_code}: {message}", code)
