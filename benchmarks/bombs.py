"""Resource bombs against a running server: how long each takes to be refused, and how long
`/health` takes meanwhile.

One `noetl server start` and one worker on embedded PostgreSQL and NATS. Three rounds of, all
at once: a 324-byte YAML alias bomb, a YAML document nested 5,000 deep, a JSON payload nested
100,000 deep, a 6 MiB chunked body, and a playbook whose `when` builds `'a' * 10**9`; while
they run, `/health` is polled every 50 ms. Prints each request's status and time, and the
median and maximum `/health` latency.

    .venv/bin/python -m benchmarks.bombs
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from benchmarks.common import cluster

ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]"
        for a, b in zip("abcdefgh", "bcdefghi", strict=True)
    ]
)
HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: bomb, path: bench/bomb}\n"
TEMPLATE_BOMB = (
    HEADER
    + """workload: {k: 1000000000}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      - step: end
        when: "{{ ('a' * k) | length > 0 }}"
  - step: end
    tool: {kind: noop}
"""
)


def _chunks() -> Iterator[bytes]:
    yield b'{"path": "p", "payload": {"x": "'
    for _ in range(6):
        yield b"#" * (1024 * 1024)
    yield b'"}}'


def _bombs(client: httpx.Client) -> list[tuple[str, int, float]]:
    results: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    json_headers = {"content-type": "application/json"}
    deep_json = '{"path": "p", "payload": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    requests: dict[str, Callable[[], Any]] = {
        "YAML alias bomb": lambda: client.post("/api/catalog/register", content=ALIAS_BOMB),
        "YAML 5,000 deep": lambda: client.post(
            "/api/catalog/register", content=HEADER + "workload: " + "[" * 5000 + "]" * 5000
        ),
        "JSON 100,000 deep": lambda: client.post(
            "/api/execute", content=deep_json, headers=json_headers
        ),
        "6 MiB chunked body": lambda: client.post(
            "/api/execute", content=_chunks(), headers=json_headers
        ),
        "template bomb (run)": lambda: _run(client, TEMPLATE_BOMB),
    }

    def send(name: str) -> None:
        started = time.perf_counter()
        status = requests[name]().status_code
        with lock:
            results.append((name, status, time.perf_counter() - started))

    threads = [threading.Thread(target=send, args=(name,)) for name in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class _Done:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


def _run(client: httpx.Client, playbook: str) -> _Done:
    started = client.post("/api/execute", json={"playbook": playbook}).json()
    while True:
        body = client.get(f"/api/executions/{started['execution_id']}").json()
        if body["status"] != "RUNNING":
            return _Done(200 if body["status"] == "FAILED" else 500)
        time.sleep(0.05)


def main() -> None:
    with cluster(workers=1) as url, httpx.Client(base_url=url, timeout=120) as client:
        latencies: list[float] = []
        stop = threading.Event()

        def poll_health() -> None:
            with httpx.Client(base_url=url, timeout=30) as probe:
                while not stop.is_set():
                    started = time.perf_counter()
                    probe.get("/health").raise_for_status()
                    latencies.append(time.perf_counter() - started)
                    time.sleep(0.05)

        poller = threading.Thread(target=poll_health)
        poller.start()
        try:
            for round_ in range(1, 4):
                for name, status, seconds in sorted(_bombs(client)):
                    print(f"round {round_}: {name}: HTTP {status} in {seconds:.2f} s", flush=True)
        finally:
            stop.set()
            poller.join()
        print(
            f"/health during the bombs: {len(latencies)} probes, median"
            f" {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
