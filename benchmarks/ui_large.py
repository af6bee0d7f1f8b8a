"""How fast the UI's routes answer for one large loop: the page's poll (`/live`), the
timeline, a step's details and the first page of events, while the loop runs and after.

Server process + two worker processes + PostgreSQL + NATS JetStream (embedded, real); one
parallel loop of N trivial python steps (`benchmarks.loop`'s playbook).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import httpx

from benchmarks.common import cluster
from benchmarks.loop import playbook


def timed(client: httpx.Client, url: str, **params: str | int) -> float:
    started = time.perf_counter()
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    args = parser.parse_args()
    with cluster(workers=2, concurrency=50) as url, httpx.Client(base_url=url, timeout=120) as c:
        entry = c.post("/api/catalog/register", content=playbook("python", 100)).json()
        started = c.post(
            "/api/execute", json={"catalog_id": entry["catalog_id"], "payload": {"n": args.items}}
        ).json()
        path = f"/api/executions/{started['execution_id']}"
        during: dict[str, list[float]] = {"live": [], "timeline": []}
        done = threading.Event()

        def sample() -> None:
            with httpx.Client(base_url=url, timeout=120) as client:
                while not done.is_set():
                    during["live"].append(timed(client, f"{path}/live", after=0, limit=0))
                    during["timeline"].append(timed(client, f"{path}/timeline"))
                    time.sleep(1.0)

        sampler = threading.Thread(target=sample)
        sampler.start()
        while (execution := c.get(path).json())["status"] == "RUNNING":
            time.sleep(0.5)
        done.set()
        sampler.join()
        seconds = float(execution["duration_seconds"])
        print(f"{args.items} items: {execution['status']} in {seconds:.1f} s")
        for name, values in during.items():
            print(
                f"  while running, {name}: median {statistics.median(values):.1f} ms,"
                f" max {max(values):.1f} ms over {len(values)} polls"
            )
        time.sleep(2.5)  # past the shared snapshots' age
        after = {
            "live (poll)": timed(c, f"{path}/live", after=0, limit=0),
            "live + 200 events": timed(c, f"{path}/live", after=0, limit=200),
            "timeline": timed(c, f"{path}/timeline"),
            "step details": timed(c, f"{path}/steps/start"),
            "graph": timed(c, f"/api/catalog/{entry['catalog_id']}/graph"),
            "executions list": timed(c, "/api/executions", brief="true", limit=50),
        }
        for name, value in after.items():
            print(f"  after the end, {name}: {value:.1f} ms")


if __name__ == "__main__":
    main()
