"""`noetl ui` and `noetl run --ui`: keep a server and a worker up on the embedded (or
configured) PostgreSQL and NATS, print the web UI's address and wait for Ctrl-C; and whether
one serves a NOETL_HOME (`noetl run` and `noetl test` of it then go there)."""

from __future__ import annotations

import asyncio
import signal

from rich.console import Console

from noetl.config import Settings

# Seconds a step still running when `noetl ui` is asked to stop gets to finish. Past it the
# step is cancelled, its claim lapses and it runs again when the home's services next start:
# a stop never waits for a step of an hour.
STOP_GRACE = 5.0


async def until_stopped() -> None:
    """Until SIGINT (Ctrl-C) or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if callable(previous):  # remove_signal_handler left SIGTERM at its default: killing
            signal.signal(signal.SIGTERM, previous)


def serving_ui(settings: Settings) -> str | None:
    """The URL of the `noetl ui` that serves this NOETL_HOME's embedded services, saying on
    stderr that the run (or the tests) go there; None when none does, or nothing is embedded."""
    from noetl.cli.connection import err
    from noetl.embedded.runtime import served_at

    url = served_at(settings.home) if settings.embeds else None
    if url is not None:
        err.print(f"running on the NoETL UI that serves {settings.home}: {url}/", highlight=False)
    return url


def open_browser(url: str) -> bool:
    """Open `url` in the desktop's browser when there is one; False on a headless machine."""
    import webbrowser  # (this module is on every `noetl run`'s path: `serving_ui`)

    try:
        return webbrowser.get().open(url)
    except webbrowser.Error:
        return False


async def serve(settings: Settings, port: int, console: Console, *, browse: bool) -> None:
    from noetl.embedded.runtime import advertised, embedded_services, running

    async with embedded_services(settings) as live, running(live, port=port or None) as runtime:
        url = f"{runtime.url}/"
        console.print(f"NoETL UI: {url}", highlight=False)
        console.print(
            f"data in {settings.home}; Ctrl-C stops the server, the worker and the services",
            style="dim",
            highlight=False,
        )
        if browse:
            open_browser(url)
        with advertised(settings, runtime.url):  # a `noetl run` of this home runs here
            await until_stopped()
        runtime.grace = STOP_GRACE
        busy = sum(len(worker.running) for worker in runtime.workers)
        if busy:
            console.print(
                f"stopping: {busy} running step(s) get {STOP_GRACE:g} s to finish, then"
                " they are stopped (they run again when the services next start)",
                highlight=False,
            )
