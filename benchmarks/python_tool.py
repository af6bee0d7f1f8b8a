"""Per-call cost of the python tool: in-process (``isolated: false``) vs isolated (a child).

    .venv/bin/python -m benchmarks.python_tool --calls 2000

No server, no database: the tool itself, called from an event loop (uvloop where installed,
as in the worker). Prints the cold start of the pool (the first isolated call after a
close: one child process started, then the call), the start of a full pool (pool-size
concurrent calls on a fresh pool), then the median and p95 of N sequential warm calls of
``result = 1`` in each mode, and the throughput of pool-size concurrent callers.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from noetl.tools import ToolCall, python_pool
from noetl.tools.python import PythonTool

CODE = "result = 1"


def call(isolated: bool) -> ToolCall:
    return ToolCall("python", {"code": CODE, "isolated": isolated}, {}, 1, "bench")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def timed(action: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await action()
    return (time.perf_counter() - started) * 1000


async def sequential(tool: PythonTool, isolated: bool, calls: int) -> list[float]:
    request = call(isolated)
    for _ in range(min(calls, 100)):  # warm up: threads, children, imports, caches
        await tool.run(request)
    return [await timed(lambda: tool.run(request)) for _ in range(calls)]


async def throughput(tool: PythonTool, isolated: bool, calls: int, callers: int) -> float:
    request = call(isolated)
    remaining = calls

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await tool.run(request)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return calls / (time.perf_counter() - started)


async def main(calls: int) -> None:
    tool = PythonTool()
    size = python_pool.settings()["pool_size"]
    colds = []
    for _ in range(5):
        await tool.close()
        colds.append(await timed(lambda: tool.run(call(True))))
    print(
        f"cold start, first isolated call on a fresh pool: median {statistics.median(colds):.1f} ms"
    )
    await tool.close()
    full = await timed(lambda: asyncio.gather(*(tool.run(call(True)) for _ in range(size))))
    print(f"cold start of a full pool ({size} concurrent first calls): {full:.1f} ms")
    print(f"{calls} sequential warm calls of {CODE!r}:")
    for isolated in (False, True):
        times = await sequential(tool, isolated, calls)
        label = "isolated (child process)" if isolated else "in-process (thread)     "
        print(
            f"  {label}  median {statistics.median(times):.3f} ms"
            f"  p95 {percentile(times, 0.95):.3f} ms"
        )
    print(f"throughput, {size} concurrent callers:")
    for isolated in (False, True):
        rate = await throughput(tool, isolated, calls, size)
        label = "isolated  " if isolated else "in-process"
        print(f"  {label}  {rate:.0f} calls/s")
    await tool.close()


def run(calls: int, loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(main(calls))
    else:
        asyncio.run(main(calls))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    try:
        import uvloop  # noqa: F401

        default_loop = "uvloop"
    except ImportError:
        default_loop = "asyncio"
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default=default_loop)
    args = parser.parse_args()
    run(args.calls, args.loop)
