"""`noetl ui` and `noetl run --ui`: keep a server and a worker up on the embedded (or
configured) PostgreSQL and NATS, print the web UI's address and wait for Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import webbrowser

from rich.console import Console

from noetl.config import Settings


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


def open_browser(url: str) -> bool:
    """Open `url` in the desktop's browser when there is one; False on a headless machine."""
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
