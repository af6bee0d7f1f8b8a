"""`noetl`: run playbooks, start the server and workers, talk to the API."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import httpx
import typer
import yaml
from rich.console import Console

from noetl import logs
from noetl.cli import admin
from noetl.cli.connection import CONNECTION, App, async_client, check, client
from noetl.cli.progress import follow
from noetl.cli.schedules import schedule_app
from noetl.config import Settings
from noetl.documents import read_document
from noetl.errors import ConfigError, PlaybookError

if TYPE_CHECKING:
    from noetl.dsl.model import Playbook
    from noetl.embedded.server_process import ServerProcess

T = TypeVar("T")

app = App(
    help="NoETL: event-sourced workflows on PostgreSQL and NATS JetStream.",
    no_args_is_help=True,
    add_completion=True,
)
server_app = typer.Typer(help="The HTTP server.", no_args_is_help=True)
worker_app = typer.Typer(help="Workers.", no_args_is_help=True)
db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(server_app, name="server")
app.add_typer(worker_app, name="worker")
app.add_typer(db_app, name="db")
app.add_typer(admin.catalog_app, name="catalog")
app.add_typer(admin.credentials_app, name="credentials")
app.add_typer(schedule_app, name="schedule")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

PayloadOption = Annotated[
    str | None, typer.Option("--payload", help="JSON object merged over the workload")
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="key=value merged over the workload (repeatable)")
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        help="Seconds: an execution still running after them is cancelled",
        show_default=False,
    ),
]


# the loop and main task `_event_loop_run` runs, for `_interrupt`; and whether it cancelled it
_RUNNING: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []
_INTERRUPTED: list[bool] = []


def _event_loop_run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed (Linux, macOS): it is the faster loop. A
    SIGTERM while it runs cancels `main` (`_interrupt`), raised here as KeyboardInterrupt."""

    async def guarded() -> T:
        current = asyncio.current_task()
        assert current is not None
        running = (asyncio.get_running_loop(), current)
        _RUNNING.append(running)
        try:
            return await main
        finally:
            _RUNNING.remove(running)

    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, T]], T] = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(guarded())
    except asyncio.CancelledError:
        if _INTERRUPTED:
            raise KeyboardInterrupt from None
        raise


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        _fail(f"configuration: {exc}")


def _fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def _payload(payload: str | None, sets: list[str] | None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if payload:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            _fail(f"--payload is not JSON: {exc}")
        if not isinstance(data, dict):
            _fail("--payload must be a JSON object")
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--set expects key=value, got {item!r}")
        data[key] = yaml.safe_load(value) if value else ""
    return data


def _read(file: Path) -> str:
    try:
        return read_document(file)
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}")


def _check(response: httpx.Response) -> dict[str, Any]:
    return check(response)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"noetl {version('noetl')}")
        raise typer.Exit(0)


@app.callback()
def options(
    server: Annotated[
        str | None,
        typer.Option("--server", help="Server URL for API commands [default: SERVER_API_URL]"),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="API token sent as a bearer token [default: NOETL_API_TOKEN]"),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks of unexpected errors")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version"),
    ] = False,
) -> None:
    """NoETL: event-sourced workflows on PostgreSQL and NATS JetStream."""
    CONNECTION.server, CONNECTION.token, CONNECTION.verbose = server, token, verbose


# -- run ----------------------------------------------------------------------------------


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Playbook YAML file")],
    payload: PayloadOption = None,
    set_: SetOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object as the last line")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    register_: Annotated[
        list[Path] | None,
        typer.Option(
            "--register", help="Register this playbook first (a sub-playbook; repeatable)"
        ),
    ] = None,
    ui: Annotated[
        bool, typer.Option("--ui", help="Keep the services up after the run; print the UI's URL")
    ] = False,
    timeout: TimeoutOption = None,
) -> None:
    """Run a playbook to the end on an embedded (or configured) PostgreSQL and NATS."""
    from noetl.embedded.server_process import ServerProcess

    server = ServerProcess.take()  # started first thing by the `noetl` command, or now
    settings = _settings()
    content = _read(file)
    _validate_or_exit(content, str(file))
    others = [_read(path) for path in register_ or []]
    for path, text in zip(register_ or [], others, strict=True):
        _validate_or_exit(text, str(path))
    logs.setup("INFO" if verbose else "WARNING")
    body: dict[str, Any] = {"playbook": content, "payload": _payload(payload, set_)}
    if timeout is not None:
        body["timeout_seconds"] = timeout
    console = None if as_json else out
    signal.signal(signal.SIGTERM, _interrupt)  # from here on a signal stops what started
    from noetl.cli.ui import serving_ui

    serving = serving_ui(settings)
    try:
        if serving is not None:  # a `noetl ui` serves this home: the run goes there
            server.kill()
            execution = _event_loop_run(
                _run_at(serving, settings, body, console, others, keep_up=ui)
            )
        else:
            _note_new_key(settings)
            execution = _event_loop_run(
                _run(settings, body, console, others, server=server, keep_up=ui)
            )
    except KeyboardInterrupt:  # while the services started or stopped: they are stopped
        err.print("interrupted: the embedded services are stopped", highlight=False)
        raise typer.Exit(130) from None
    _print_outcome(execution, as_json=as_json)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM outside the follow (services starting or stopping) stops as Ctrl-C does, so
    the context managers stop the embedded services: the default action killed the process
    and left postgres and nats-server running. While an event loop runs, its main task is
    cancelled, as asyncio's runner does for Ctrl-C: an exception raised from a signal handler
    inside the loop could leave it marked running ("Cannot close a running event loop")."""
    if _RUNNING:
        loop, task = _RUNNING[-1]
        _INTERRUPTED.append(True)
        loop.call_soon_threadsafe(task.cancel)
        return
    raise KeyboardInterrupt


def _print_outcome(execution: dict[str, Any], *, as_json: bool = False) -> NoReturn:
    """The end of `run`, `execute --wait` and `rerun --wait`: status, error or result; exit 0
    on COMPLETED, 1 otherwise."""
    status = execution["status"]
    if as_json:
        print(
            json.dumps(
                {k: execution.get(k) for k in ("execution_id", "status", "result", "error")},
                default=str,
            )
        )
    else:
        color = "green" if status == "COMPLETED" else "red"
        out.print(
            f"[{color}]{status}[/] execution {execution['execution_id']}"
            f" in {execution.get('duration_seconds') or 0:.2f}s"
        )
        if execution.get("error"):
            out.print(f"[red]error:[/] {execution['error']}", highlight=False)
        if status == "COMPLETED":
            out.print_json(data=execution.get("result"))
    if execution.get("interrupted"):
        raise typer.Exit(130)
    raise typer.Exit(0 if status == "COMPLETED" else 1)


def _note_new_key(settings: Settings) -> None:
    """One plain line instead of a log record when a first run generates the key file."""
    key_file = settings.home / "encryption.key"
    if not settings.encryption_key and not key_file.exists():
        err.print(
            f"note: credentials will be encrypted with a new key in {key_file}"
            " (set NOETL_ENCRYPTION_KEY to choose the key)",
            highlight=False,
        )
    logging.getLogger("noetl.secrets").setLevel(logging.ERROR)


async def _run(
    settings: Settings,
    body: dict[str, Any],
    console: Console | None,
    register_first: list[str],
    *,
    server: ServerProcess,
    keep_up: bool = False,
) -> dict[str, Any]:
    from noetl.embedded.runtime import embedded_services, preload, running

    load = functools.partial(preload, server=False)  # the server process imports the server
    async with embedded_services(settings, meanwhile=load) as live:  # noqa: SIM117
        async with (
            running(live, ui=keep_up, warm=True, process=server) as runtime,
            runtime.client(timeout=30) as client,
        ):
            for text in register_first:
                _check(await client.post("/api/catalog/register", json={"content": text}))
            started = _check(await client.post("/api/execute", json=body))
            ended = runtime.workers[0].ended if runtime.workers else None
            execution = await _follow_until_interrupted(
                client, started["execution_id"], console, ended
            )
            # the execution has ended (or was cancelled): whatever still runs on the worker was
            # cancelled with it, so the stop does not wait for it (a failed loop's other
            # iterations ran on for their whole duration)
            runtime.grace = 1.0
            if execution.get("interrupted"):
                return execution
            if keep_up:
                from noetl.cli.ui import until_stopped
                from noetl.embedded.runtime import advertised

                err.print(
                    f"{execution['status']}: see {runtime.url}/ui/executions/"
                    f"{execution['execution_id']} (Ctrl-C stops the services)",
                    highlight=False,
                )
                with advertised(settings, runtime.url):  # later runs of this home go here
                    await until_stopped()
            return execution


async def _run_at(
    url: str,
    settings: Settings,
    body: dict[str, Any],
    console: Console | None,
    register_first: list[str],
    *,
    keep_up: bool = False,
) -> dict[str, Any]:
    """`_run` through the server of the `noetl ui` that embeds this NOETL_HOME's services
    (only one process may): the run shows in its web UI, and its worker runs it."""
    async with async_client(settings.with_(server_url=url)) as api:
        for text in register_first:
            _check(await api.post("/api/catalog/register", json={"content": text}))
        started = _check(await api.post("/api/execute", json=body))
        execution = await _follow_until_interrupted(api, started["execution_id"], console)
    if keep_up and not execution.get("interrupted"):
        err.print(
            f"{execution['status']}: see {url}/ui/executions/{execution['execution_id']}",
            highlight=False,
        )
    return execution


async def _follow_until_interrupted(
    client: httpx.AsyncClient,
    execution_id: str,
    console: Console | None,
    ended: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Follow the execution; Ctrl-C or SIGTERM cancels it and returns its view at once."""
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, interrupted.set)
    following = asyncio.create_task(follow(client, execution_id, console, ended=ended))
    stopping = asyncio.create_task(interrupted.wait())
    try:
        await asyncio.wait({following, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        signal.signal(signal.SIGTERM, _interrupt)  # remove_signal_handler set SIG_DFL
        stopping.cancel()
    if following.done():
        return following.result()
    following.cancel()
    err.print("interrupted: cancelling the execution and stopping", highlight=False)
    with contextlib.suppress(httpx.HTTPError):
        await client.post(f"/api/executions/{execution_id}/cancel", timeout=3)
    try:
        execution: dict[str, Any] = (
            await client.get(f"/api/executions/{execution_id}", timeout=3)
        ).json()
    except (httpx.HTTPError, ValueError):
        execution = {"execution_id": execution_id, "status": "CANCELLED"}
    return {**execution, "interrupted": True}


def _validate_or_exit(content: str, file: str) -> Playbook:
    from noetl.dsl import parse_playbook

    try:
        return parse_playbook(content, file)
    except PlaybookError as exc:
        in_file_order = sorted(exc.problems, key=lambda p: (p.line or 0, p.column or 0))
        for problem in in_file_order:
            err.print(str(problem), highlight=False)
        _fail(f"{file} is not a valid playbook ({len(exc.problems)} problem(s))")


@app.command("test")
def playbook_tests(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="PlaybookTest files, or folders searched recursively [default: .]"),
    ] = None,
) -> None:
    """Run playbook tests (kind: PlaybookTest) and print a pass/fail table; exit 1 on failure."""
    from rich.table import Table

    from noetl.cli import playbook_test
    from noetl.cli.testing import run_all

    settings = _settings()
    files = playbook_test.find(paths or [Path()])
    if not files:
        _fail(f"no PlaybookTest file in {', '.join(str(p) for p in paths or [Path()])}")
    try:
        tests = [test for file in files for test in playbook_test.load(file)]
    except playbook_test.BadTestFile as exc:
        _fail(str(exc))
    logs.setup("WARNING")
    signal.signal(signal.SIGTERM, _interrupt)  # from here on a signal stops what started
    try:
        _note_new_key(settings)
        outcomes = _event_loop_run(run_all(settings, tests))
    except KeyboardInterrupt:
        err.print("interrupted: the embedded services are stopped", highlight=False)
        raise typer.Exit(130) from None
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("test", "file", "result", "seconds", "why"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        table.add_row(
            outcome.test.name,
            str(outcome.test.file),
            "[green]PASS[/]" if outcome.passed else "[red]FAIL[/]",
            f"{outcome.seconds:.2f}",
            "\n".join(outcome.problems),
        )
    admin.out.print(table)
    failed = sum(not o.passed for o in outcomes)
    out.print(f"{len(outcomes) - failed} passed, {failed} failed", highlight=False)
    raise typer.Exit(1 if failed else 0)


def _warn_splices(content: str, file: str) -> None:
    """Warnings (not errors): unquoted splices of caller data into shell or SQL text."""
    from noetl.dsl.splices import splice_warnings

    for problem in splice_warnings(content, file):
        err.print(f"warning: {problem}", highlight=False)


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="Playbook YAML file")]) -> None:
    """Check a playbook and list every problem with its line.

    Also warns about unquoted splices of payload or step-result values into shell or SQL text."""
    content = _read(file)
    playbook = _validate_or_exit(content, str(file))
    for note in playbook.notes:
        out.print(f"[yellow]note[/] {note}", highlight=False)
    _warn_splices(content, str(file))
    out.print(f"[green]ok[/] {file}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of a playbook (for editors: yaml-language-server, IDEs)."""
    from noetl.dsl.schema import playbook_schema

    print(json.dumps(playbook_schema(), indent=2))


# -- processes ----------------------------------------------------------------------------


@server_app.command("start")
def server_start(
    host: Annotated[str | None, typer.Option(help="Bind address (NOETL_SERVER_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (NOETL_SERVER_PORT)")] = None,
) -> None:
    """Serve the API (needs NOETL_DATABASE_URL and NATS_URL)."""
    import uvicorn

    from noetl.server.app import create_app

    settings = _settings()
    settings = settings.with_(
        server_host=host or settings.server_host, server_port=port or settings.server_port
    )
    try:
        settings.require_database_url()
        settings.require_nats_url()
    except ConfigError as exc:
        _fail(str(exc))
    logs.setup(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.server_host,
        port=settings.server_port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@worker_app.command("start")
def worker_start(
    concurrency: Annotated[
        int | None, typer.Option(help="Commands at once (NOETL_WORKER_CONCURRENCY)")
    ] = None,
) -> None:
    """Run a worker (needs NATS_URL and SERVER_API_URL). SIGTERM finishes running commands."""
    from noetl.worker.worker import Worker

    settings = _settings()
    if concurrency is not None:
        if concurrency < 1:
            _fail("--concurrency must be at least 1")
        settings = settings.with_(worker_concurrency=concurrency)
    try:
        settings.require_nats_url()
    except ConfigError as exc:
        _fail(str(exc))
    logs.setup(settings.log_level)

    async def main() -> None:
        worker = Worker(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    _event_loop_run(main())


@app.command("ui")
def ui_command(
    port: Annotated[
        int | None, typer.Option(help="Port (default NOETL_SERVER_PORT; 0: a free one)")
    ] = None,
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open a browser when there is one")
    ] = True,
) -> None:
    """Serve the web UI on the embedded services of NOETL_HOME until Ctrl-C.

    Starts the embedded PostgreSQL and NATS, a server and a worker, and prints the UI's URL."""
    from noetl.cli.ui import serve

    settings = _settings()
    logs.setup("WARNING")
    signal.signal(signal.SIGTERM, _interrupt)  # from here on a signal stops what started
    try:
        _note_new_key(settings)
        _event_loop_run(
            serve(settings, settings.server_port if port is None else port, out, browse=browser)
        )
    except KeyboardInterrupt:  # before the UI was up, or while it stopped
        err.print("interrupted: the embedded services are stopped", highlight=False)
        raise typer.Exit(130) from None
    except RuntimeError as exc:
        _fail(f"{exc}; is port {port or settings.server_port} in use? (--port 0 picks a free one)")


@db_app.command("init")
def db_init() -> None:
    """Create or upgrade the `noetl` schema (needs NOETL_DATABASE_URL)."""
    from noetl.store.database import init_database

    settings = _settings()
    try:
        url = settings.require_database_url()
    except ConfigError as exc:
        _fail(str(exc))
    applied = asyncio.run(init_database(url))
    out.print(f"schema noetl up to date ({len(applied)} migration(s) applied)")


# -- API client commands ------------------------------------------------------------------


def _client() -> httpx.Client:
    return client(_settings())


@app.command()
def register(
    paths: Annotated[
        list[Path], typer.Argument(help="Playbook files, or folders searched recursively")
    ],
) -> None:
    """Register playbooks in the server's catalog; a folder registers every playbook in it."""
    files = _playbook_files(paths)
    if not files:
        _fail(f"no playbook (kind: Playbook YAML) in {', '.join(map(str, paths))}")
    failed = 0
    with _client() as api:
        for file in files:
            response = api.post(
                "/api/catalog/register",
                content=_read(file),
                headers={"content-type": "application/yaml"},
            )
            if response.status_code >= 400 and len(files) > 1:
                failed += 1
                body = response.json() if "json" in response.headers.get("content-type", "") else {}
                message = body.get("message", response.text)
                err.print(f"[red]✗[/] {file}: {message}", highlight=False)
                continue
            entry = _check(response)
            what = "registered" if entry.get("created", True) else "unchanged"
            out.print(
                f"{what} {entry['path']} version {entry['version']}"
                f" (catalog_id {entry['catalog_id']}) from {file}",
                highlight=False,
            )
    if failed:
        _fail(f"{failed} of {len(files)} playbook(s) not registered", 1)


def _playbook_files(paths: list[Path]) -> list[Path]:
    """The files given, and in each folder (recursively) the YAML files of kind Playbook."""
    from noetl.cli.playbook_test import playbook_files

    try:
        return playbook_files(paths)
    except FileNotFoundError as exc:
        _fail(str(exc))


@app.command()
def execute(
    path: Annotated[str, typer.Argument(help="Catalog path of a registered playbook")],
    payload: PayloadOption = None,
    set_: SetOption = None,
    version: Annotated[int | None, typer.Option(help="Catalog version (default: latest)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow until the execution ends")] = False,
    timeout: TimeoutOption = None,
) -> None:
    """Start an execution of a registered playbook."""
    body: dict[str, Any] = {"path": path, "payload": _payload(payload, set_), "version": version}
    if timeout is not None:
        body["timeout_seconds"] = timeout
    with _client() as client:
        started = _check(client.post("/api/execute", json=body))
    execution_id = started["execution_id"]
    out.print(f"execution {execution_id} started")
    if wait:
        _wait_and_exit(execution_id)


@app.command()
def rerun(
    execution_id: Annotated[str, typer.Argument(help="The ended execution to re-run")],
    from_failed: Annotated[
        bool, typer.Option("--from-failed", help="Restart at the failed steps (the default)")
    ] = False,
    from_step: Annotated[
        str | None, typer.Option("--from", help="Restart at this step (and run all after it)")
    ] = None,
    payload: PayloadOption = None,
    set_: SetOption = None,
    version: Annotated[
        str | None, typer.Option(help="Catalog version or 'latest' (default: the original's)")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow until the re-run ends")] = False,
) -> None:
    """Re-run an ended execution: completed steps before the restart point are reused."""
    if from_failed and from_step:
        _fail("give --from-failed or --from STEP, not both")
    body: dict[str, Any] = {"payload": _payload(payload, set_)}
    if from_step:
        body["from_step"] = from_step
    else:
        body["from_failed"] = True
    if version is not None:
        body["version"] = version if version == "latest" else _int(version, "--version")
    with _client() as client:
        started = _check(client.post(f"/api/executions/{execution_id}/rerun", json=body))
    new_id = started["execution_id"]
    reused = ", ".join(started["reused"]) or "nothing"
    out.print(
        f"execution {new_id} started (re-run of {execution_id} from"
        f" {', '.join(started['restart'])}; reused: {reused})",
        highlight=False,
    )
    if wait:
        _wait_and_exit(new_id)


def _int(value: str, option: str) -> int:
    try:
        return int(value)
    except ValueError:
        _fail(f"{option} expects an integer or 'latest', got {value!r}")


def _wait_and_exit(execution_id: str) -> NoReturn:
    async def wait_for() -> dict[str, Any]:
        async with async_client(_settings()) as api:
            return await follow(api, execution_id, out, poll=0.2)

    try:
        execution = asyncio.run(wait_for())
    except KeyboardInterrupt:  # Ctrl-C stops following, not the execution: it runs on a server
        err.print(
            f"stopped following; execution {execution_id} goes on"
            f" (`noetl cancel {execution_id}` stops it)",
            highlight=False,
        )
        raise typer.Exit(130) from None
    _print_outcome(execution)


@app.command()
def status(execution_id: Annotated[str, typer.Argument()]) -> None:
    """Show an execution: status, timings, steps, result, error."""
    with _client() as client:
        out.print_json(data=_check(client.get(f"/api/executions/{execution_id}")))


@app.command()
def events(execution_id: Annotated[str, typer.Argument()]) -> None:
    """List an execution's events in order."""
    with _client() as client:
        items = _check(client.get(f"/api/executions/{execution_id}/events"))["items"]
    for event in items:
        detail = event["error"] or ""
        out.print(
            f"{event['created_at']}  {event['event_type']:<20} {event['step'] or '':<24}"
            f" {event['command_id'] or ''} {detail}",
            highlight=False,
        )


@app.command("logs")
def show_logs(
    execution_id: Annotated[str, typer.Argument()],
    step: Annotated[str | None, typer.Option("--step", help="Only this step")] = None,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the execution ends")
    ] = False,
) -> None:
    """Print what each command's tools printed (python print/stderr, shell output)."""
    after = 0
    with _client() as client:
        while True:
            status = None
            if follow_:
                status = _check(client.get(f"/api/executions/{execution_id}"))["status"]
            params: dict[str, Any] = {"after": after, **({"step": step} if step else {})}
            items = _check(client.get(f"/api/executions/{execution_id}/logs", params=params))
            for item in items["items"]:
                after = max(after, int(item["event_id"]))
                _show_log(item)
            if not follow_ or (status != "RUNNING" and not items["items"]):
                return
            if not items["items"]:
                time.sleep(0.5)


def _show_log(item: dict[str, Any]) -> None:
    name = item["step"] + (f"[{item['iteration']}]" if item["iteration"] is not None else "")
    attempt = f" · attempt {item['attempt']}" if (item["attempt"] or 1) > 1 else ""
    failed = " · FAILED" if item["status"] == "FAILED" else ""
    color = "red" if item["stream"] == "stderr" else "cyan"
    out.print(f"[{color}]── {name} {item['stream']}{attempt}{failed}[/]", highlight=False)
    out.out(item["text"].rstrip("\n"), highlight=False)


@app.command()
def cancel(execution_id: Annotated[str, typer.Argument()]) -> None:
    """Cancel a running execution and its pending commands."""
    with _client() as client:
        out.print_json(data=_check(client.post(f"/api/executions/{execution_id}/cancel")))


app.command("executions")(admin.executions)
app.command("workers")(admin.workers)


def main() -> NoReturn:
    """The `noetl` command. Its process ends with os._exit once the output is flushed and the
    exit handlers ran: the interpreter's own teardown of the thousand modules `noetl run`
    imports (run before exiting, and nothing needs it) took 0.1-0.3 s."""
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    if not isinstance(code, int):  # sys.exit("message") or sys.exit(None)
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    finish_threads = getattr(threading, "_shutdown", None)  # what a normal exit runs first:
    if finish_threads is not None:  # threads' exit hooks (thread pools stop), then joins
        finish_threads()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
