"""What open UI pages cost a running loop: a 1,000-item parallel loop with and without 20
execution pages open on it.

Server process + two worker processes + PostgreSQL + NATS JetStream (embedded, real), as in
`benchmarks.loop`. "Pages" are either 20 clients that make exactly the requests an open
execution page makes (`--pages http`, the default: the server's cost alone; `http-events`:
pages scrolled down to the events table, which follow the event log too), or 20 tabs of
Debian's Chromium (`--pages chromium`: the real page, whose rendering shares the machine's
CPUs with the server). Runs alternate (without, with) to spread drift; the loop's duration is
the server's (ended_at - created_at). Pages open when the execution starts, so each also pays
its first load (events, graph, timeline, children) during the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import aiohttp
import httpx
import psutil

from benchmarks.common import cluster
from benchmarks.loop import playbook

TICK = 1.0  # execution.js polls /live every second ...
SLOW_EVERY = 5  # ... and the timeline and children every fifth tick
EVENTS = 200  # events per request while the table follows the log


async def page(
    base: str, execution_id: str, catalog_id: str, done: asyncio.Event, events: bool
) -> int:
    """The requests of one open execution page (see noetl/ui/static/execution.js); with
    `events`, a page scrolled down to the events table, which then follows the log."""
    requests = 0
    path = f"{base}/api/executions/{execution_id}"
    async with aiohttp.ClientSession() as client:

        async def get(url: str, **params: str | int) -> Any:
            nonlocal requests
            requests += 1
            async with client.get(url, params=params) as response:
                assert response.status == 200, await response.text()
                return await response.json()

        await get(f"{path}/live", after=0, limit=0)
        await get(f"{base}/api/catalog/{catalog_id}/graph")
        await get(f"{path}/timeline")
        await get(f"{base}/api/executions", parent=execution_id, brief="true")
        cursor, shown, ticks = "0", 0, 0
        if events:
            first = await get(f"{path}/live", after=0, limit=EVENTS)
            cursor, shown = first["cursor"], len(first["events"])
        while not done.is_set():
            await asyncio.sleep(TICK)
            limit = EVENTS if events and shown < 2000 else 0
            body = await get(f"{path}/live", after=cursor, limit=limit)
            cursor, shown, ticks = body["cursor"], shown + len(body["events"]), ticks + 1
            if ticks % SLOW_EVERY == 0:
                await get(f"{path}/timeline")
                await get(f"{base}/api/executions", parent=execution_id, brief="true")
            if body["execution"]["status"] != "RUNNING":
                break
    return requests


async def chromium_pages(base: str, execution_id: str, count: int, done: asyncio.Event) -> int:
    from playwright.async_api import async_playwright

    from tests.ui.conftest import CHROMIUM, FLAGS

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        context = await browser.new_context()
        tabs = [await context.new_page() for _ in range(count)]
        await asyncio.gather(*(tab.goto(f"{base}/ui/executions/{execution_id}") for tab in tabs))
        await done.wait()
        await browser.close()
    return count


def server_cpu() -> float:
    """CPU seconds (user + system) used so far by the `noetl server start` process."""
    server = next(
        p
        for p in psutil.Process().children(recursive=True)
        if "server" in p.cmdline() and "noetl.cli.main" in " ".join(p.cmdline())
    )
    times = server.cpu_times()
    return float(times.user + times.system)


async def one_run(
    base: str, catalog_id: str, items: int, pages: str, count: int
) -> tuple[float, float]:
    """The loop's duration and the server's CPU seconds from its start to its end."""
    cpu = server_cpu()
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        started = await client.post(
            "/api/execute", json={"catalog_id": catalog_id, "payload": {"n": items}}
        )
        started.raise_for_status()
        execution_id = started.json()["execution_id"]
        done = asyncio.Event()
        watchers: list[asyncio.Task[int]] = []
        if pages in ("http", "http-events"):
            watchers = [
                asyncio.create_task(
                    page(base, execution_id, catalog_id, done, pages == "http-events")
                )
                for _ in range(count)
            ]
        elif pages == "chromium":
            watchers = [asyncio.create_task(chromium_pages(base, execution_id, count, done))]
        while True:
            execution: dict[str, Any] = (await client.get(f"/api/executions/{execution_id}")).json()
            if execution["status"] != "RUNNING":
                break
            await asyncio.sleep(0.05)
        cpu = server_cpu() - cpu
        done.set()
        await asyncio.gather(*watchers)
        assert execution["status"] == "COMPLETED", execution
        return float(execution["duration_seconds"]), cpu


async def measure(base: str, args: argparse.Namespace) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        entry = (await client.post("/api/catalog/register", content=playbook("python", 100))).json()
    catalog_id = entry["catalog_id"]
    await one_run(base, catalog_id, 100, "none", 0)  # warm-up
    await one_run(base, catalog_id, 100, args.pages, args.count)
    without: list[tuple[float, float]] = []
    with_pages: list[tuple[float, float]] = []
    for _ in range(args.runs):
        without.append(await one_run(base, catalog_id, args.items, "none", 0))
        with_pages.append(await one_run(base, catalog_id, args.items, args.pages, args.count))
    a = statistics.median(d for d, _ in without)
    b = statistics.median(d for d, _ in with_pages)
    ca = statistics.median(c for _, c in without)
    cb = statistics.median(c for _, c in with_pages)
    print(f"{args.items}-item loop, {args.runs} runs each, medians (server CPU during the run):")
    for label, runs, median, cpu in (
        ("no pages open", without, a, ca),
        (f"{args.count} pages open ({args.pages})", with_pages, b, cb),
    ):
        listed = ", ".join(f"{d:.2f}" for d, _ in runs)
        print(f"  {label:28} {median:.3f} s, server CPU {cpu:.2f} s  ({listed})")
    print(f"  slowdown: {100 * (b - a) / a:+.1f} %; server CPU: {100 * (cb - ca) / ca:+.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--count", type=int, default=20, help="open pages")
    parser.add_argument("--pages", choices=["http", "http-events", "chromium"], default="http")
    parser.add_argument("--concurrency", type=int, default=50, help="per worker")
    args = parser.parse_args()
    with cluster(workers=2, concurrency=args.concurrency) as url:
        asyncio.run(measure(url, args))


if __name__ == "__main__":
    main()
