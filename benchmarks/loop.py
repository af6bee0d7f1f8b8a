"""Items/s of a parallel loop of trivial steps with two workers, and the server's peak memory.

Server process + two worker processes + PostgreSQL + NATS JetStream (embedded, real).
"""

from __future__ import annotations

import argparse
import threading
import time

import httpx
import psutil

from benchmarks.common import cluster, run_to_end


def playbook(kind: str, cap: int, isolated: bool = False) -> str:
    flag = "true" if isolated else "false"
    tool = (
        f"{{kind: python, isolated: {flag}, input: {{x: '{{{{ x }}}}'}}, code: 'result = x * 2'}}"
        if kind == "python"
        else "{kind: noop, result: '{{ x }}'}"
    )
    return f"""apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: loop_bench, path: bench/loop_{kind}}}
workload: {{n: 10}}
workflow:
  - step: start
    loop: {{in: "{{{{ n }}}}", iterator: x, spec: {{mode: parallel, max_in_flight: {cap}}}}}
    tool: {tool}
    next: [end]
  - step: end
    tool: {{kind: noop, result: "{{{{ start.count }}}}"}}
"""


class PeakMemory(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--kind", choices=["python", "noop"], default="python")
    parser.add_argument("--max-in-flight", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50, help="per worker")
    parser.add_argument("--isolated", action="store_true", help="python steps in child processes")
    args = parser.parse_args()
    with (
        cluster(workers=2, concurrency=args.concurrency) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        server_pid = next(
            p.pid
            for p in psutil.Process().children(recursive=True)
            if "server" in p.cmdline() and "noetl.cli.main" in " ".join(p.cmdline())
        )
        entry = client.post(
            "/api/catalog/register", content=playbook(args.kind, args.max_in_flight, args.isolated)
        ).json()
        run_to_end(client, {"catalog_id": entry["catalog_id"], "payload": {"n": 50}})  # warm-up
        for items in args.items:
            watcher = PeakMemory(server_pid)
            watcher.start()
            execution = run_to_end(
                client, {"catalog_id": entry["catalog_id"], "payload": {"n": items}}, timeout=3600
            )
            watcher.running = False
            watcher.join()
            assert execution["status"] == "COMPLETED", execution
            assert execution["result"] == items
            seconds = float(str(execution["duration_seconds"]))
            print(
                f"{items} items ({args.kind}{' isolated' if args.isolated else ''},"
                f" max_in_flight {args.max_in_flight}, 2 workers x"
                f" {args.concurrency}): {seconds:.2f} s = {items / seconds:.0f} items/s;"
                f" server peak RSS {watcher.peak / 2**20:.0f} MiB"
            )


if __name__ == "__main__":
    main()
