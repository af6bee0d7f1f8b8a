"""Executions/s of many small executions started at once: N executions of a two-step
playbook from C concurrent API clients, full path (server + one worker + PostgreSQL + NATS).
Prints the rate at which they were accepted and at which they all ended, and the latency of
`POST /api/execute` under that load.

    .venv/bin/python -m benchmarks.starts [--executions 1000] [--clients 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from benchmarks.common import cluster

TWO_STEPS = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: starts, path: bench/starts}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'i': 1}"}
    next: [end]
  - step: end
    tool: {kind: python, input: {i: "{{ start.i }}"}, code: "result = {'i': int(i) + 1}"}
"""


async def _all_ended(api: httpx.AsyncClient) -> float:
    """The time at which no execution runs any more (polled every 50 ms)."""
    while True:
        running = await api.get("/api/executions", params={"status": "RUNNING", "limit": 1})
        if not running.json()["items"]:
            return time.perf_counter()
        await asyncio.sleep(0.05)


async def one_round(url: str, executions: int, clients: int) -> str:
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as api:
        latencies: list[float] = []
        gate = asyncio.Semaphore(clients)

        async def start() -> None:
            async with gate:
                began = time.perf_counter()
                response = await api.post("/api/execute", json={"path": "bench/starts"})
                response.raise_for_status()
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(start() for _ in range(executions)))
        accepted = time.perf_counter() - began
        ended = await _all_ended(api) - began
        failed = (await api.get("/api/executions", params={"status": "FAILED", "limit": 1})).json()
        assert not failed["items"], failed
    latencies.sort()
    return (
        f"{executions} executions from {clients} clients:"
        f" accepted at {executions / accepted:.0f}/s,"
        f" all ended after {ended:.2f} s ({executions / ended:.0f} executions/s);"
        f" POST /api/execute median {1000 * statistics.median(latencies):.1f} ms,"
        f" p95 {1000 * latencies[int(0.95 * len(latencies))]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="the first warms the stack up")
    args = parser.parse_args()
    with cluster(workers=1, concurrency=50) as url:
        response = httpx.post(f"{url}/api/catalog/register", content=TWO_STEPS)
        response.raise_for_status()
        for _ in range(args.rounds):
            print(asyncio.run(one_round(url, args.executions, args.clients)), flush=True)


if __name__ == "__main__":
    main()
