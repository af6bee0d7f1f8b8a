"""Does a loop's speed hold as it grows? Items/s of one parallel loop at several sizes on one
stack (server + 2 workers + PostgreSQL + NATS), the ratio to the smallest size, the server's
peak RSS, and from the event log: report transactions (outcomes recorded by one transaction
share its timestamp), outcomes per transaction and milliseconds per transaction.

    .venv/bin/python -m benchmarks.loop_scale --items 2000 20000 [--repeats 3]
    .venv/bin/python -m benchmarks.loop_scale --items 1000000 --kind noop   # the 10^6 loop
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import httpx
import psutil
import psycopg

from benchmarks.common import run_to_end, stack
from benchmarks.loop import PeakMemory, playbook


def transactions(database_url: str, execution_id: str) -> tuple[int, int, list[float]]:
    """(report transactions, outcomes, items/s over each tenth of the outcomes in order) of
    an execution, from its command.completed events: the rates of one run compare the start
    and the end of a loop under the same machine load."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT created_at), count(*) FROM noetl.event"
            " WHERE execution_id = %s AND event_type = 'command.completed'",
            (int(execution_id),),
        ).fetchone()
        assert row is not None
        count, outcomes = int(row[0]), int(row[1])
        marks = sorted({1, *(max(outcomes * k // 10, 1) for k in range(1, 11))})
        times = conn.execute(
            "SELECT n, created_at FROM (SELECT row_number() OVER (ORDER BY event_id) AS n,"
            " created_at FROM noetl.event WHERE execution_id = %s"
            " AND event_type = 'command.completed') t WHERE n = ANY(%s)",
            (int(execution_id), marks),
        ).fetchall()
    at = {int(n): created for n, created in times}

    def rate(first: int, last: int) -> float:
        seconds = (at[last] - at[first]).total_seconds()
        return (last - first) / seconds if seconds > 0 else float("nan")

    return count, outcomes, [rate(a, b) for a, b in itertools.pairwise(marks)]


def _cmdline(process: psutil.Process) -> list[str]:
    """A child's command line; none for one that exited (a zombie not yet reaped)."""
    try:
        return list(process.cmdline())
    except psutil.Error:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--kind", choices=["python", "noop"], default="python")
    parser.add_argument("--max-in-flight", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50, help="per worker")
    parser.add_argument("--repeats", type=int, default=1, help="runs per size (median)")
    args = parser.parse_args()
    with (
        stack(workers=2, concurrency=args.concurrency) as (url, database_url),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        server_pid = next(
            p.pid
            for p in psutil.Process().children(recursive=True)
            if "server" in _cmdline(p) and "noetl.cli.main" in " ".join(_cmdline(p))
        )
        entry = client.post(
            "/api/catalog/register", content=playbook(args.kind, args.max_in_flight)
        ).json()
        run_to_end(client, {"catalog_id": entry["catalog_id"], "payload": {"n": 50}})  # warm-up
        first_rate = None
        for items in args.items:
            rates, peaks, lines = [], [], []
            for _ in range(args.repeats):
                watcher = PeakMemory(server_pid)
                watcher.start()
                body = {"catalog_id": entry["catalog_id"], "payload": {"n": items}}
                execution = run_to_end(client, body, timeout=7200)
                watcher.running = False
                watcher.join()
                assert execution["status"] == "COMPLETED", execution
                assert execution["result"] == items, execution["result"]
                seconds = float(str(execution["duration_seconds"]))
                count, outcomes, tenths = transactions(database_url, str(execution["execution_id"]))
                rates.append(items / seconds)
                peaks.append(watcher.peak)
                lines.append(
                    f"{seconds:.2f} s, {count} report transactions,"
                    f" {outcomes / max(count, 1):.1f} outcomes and"
                    f" {1000 * seconds / max(count, 1):.1f} ms each;"
                    f" items/s per tenth of the outcomes:"
                    f" {', '.join(f'{r:.0f}' for r in tenths)}"
                )
            rate = statistics.median(rates)
            first_rate = first_rate or rate
            print(
                f"{items} items ({args.kind}, max_in_flight {args.max_in_flight}, 2 workers x"
                f" {args.concurrency}): median {rate:.0f} items/s"
                f" ({100 * rate / first_rate:.0f} % of the first size);"
                f" server peak RSS {max(peaks) / 2**20:.0f} MiB"
            )
            for line in lines:
                print(f"    {line}")


if __name__ == "__main__":
    main()
