"""The server process of `noetl run`: `python -m noetl.embedded.server_main`
(`noetl.embedded.server_process` tells what it does, and is the run's side of it)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from noetl import logs
from noetl.config import Settings
from noetl.embedded.runtime import preload, serving


def _orders() -> dict[str, Any] | None:
    """The line of orders from stdin, read without a buffer (stdin is watched for its end
    afterwards); None if stdin ended first."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(0, 4096)
        if not chunk:
            return None
        line += chunk
    orders: dict[str, Any] = json.loads(line)
    return orders


async def _serve(settings: Settings, *, ui: bool, report: IO[bytes]) -> int:
    try:
        server = await serving(settings, ui=ui)
    except RuntimeError:  # its error is logged
        return 1
    loop = asyncio.get_running_loop()

    def on_stdin() -> None:  # its end (or anything) is the order to stop
        loop.remove_reader(0)
        server.exit()

    loop.add_reader(0, on_stdin)
    report.write(b"started\n")
    report.flush()
    await server.serving
    return 0


def _lighter() -> Callable[[], None]:
    """What this process, which serves the API and runs nothing else, need not build: ~9 %
    of its imports. FastAPI defines ~45 pydantic models of the OpenAPI document at import,
    and pydantic builds each one's validator then: models defined while the server loads are
    built when first used instead (pydantic's `defer_build`; a run never asks for the OpenAPI
    document, and the request bodies are built by their route's first request anyway). And
    FastAPI imports `pydantic.v1`, all of it, to check that no annotation is a pydantic v1
    model: none is, and marked absent it is not loaded (FastAPI takes the ImportError for
    "no"). Returns what ends the first (the second holds: nothing here uses pydantic v1).
    Both lean on pydantic's internals: where they changed, nothing is done."""
    sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]
    try:
        from pydantic._internal import _config

        defaults: dict[str, Any] = _config.config_defaults  # type: ignore[assignment]
        if defaults.get("defer_build") is not False:
            return lambda: None
    except (ImportError, AttributeError):
        return lambda: None
    defaults["defer_build"] = True
    return lambda: defaults.update(defer_build=False)


def main() -> None:
    report = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever else is printed goes to stderr, never into the run's output
    loaded = _lighter()
    try:
        preload(worker=False)
    finally:
        loaded()
    orders = _orders()
    if orders is None:  # the run ended first
        os._exit(0)
    values = orders["settings"]
    settings = Settings(**{**values, "home": Path(values["home"])})
    logs.setup(orders["log"])
    for name, level in orders["levels"].items():
        logging.getLogger(name).setLevel(level)
    main = _serve(settings, ui=orders["ui"], report=report)
    try:
        import uvloop
    except ImportError:
        code = asyncio.run(main)
    else:
        code = uvloop.run(main)
    os._exit(code)


if __name__ == "__main__":
    main()
