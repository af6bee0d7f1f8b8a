"""Steps/s of a 100-step sequential playbook of trivial python steps, full path.
`--result-bytes N`: the first step returns N bytes (what the steps after a large result pay);
`--payload-bytes N`: the execution's payload is a list of ~N bytes.

Server process + one worker process + PostgreSQL + NATS JetStream (embedded, real).
Prints steps/s per run and where the milliseconds of one step go, from the event log.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime

import httpx

from benchmarks.common import cluster, run_to_end


def playbook(steps: int, isolated: bool = True, result_bytes: int = 0) -> str:
    lines = [
        "apiVersion: noetl.io/v2",
        "kind: Playbook",
        f"metadata: {{name: seq{steps}, path: bench/seq{steps}}}",
        "workflow:",
    ]
    for i in range(steps):
        name = "start" if i == 0 else f"s{i}"
        lines.append(f"  - step: {name}")
        flag = "true" if isolated else "false"
        code = (
            f'result = {{"blob": "x" * {result_bytes}}}'
            if i == 0 and result_bytes
            else "result = 1"
        )
        lines.append(f"    tool: {{kind: python, isolated: {flag}, code: '{code}'}}")
        if i < steps - 1:
            lines.append(f"    next: [s{i + 1}]")
    return "\n".join(lines) + "\n"


def breakdown(events: list[dict[str, object]]) -> dict[str, float]:
    """Median milliseconds between lifecycle events of one step, from server timestamps."""
    at: dict[tuple[str, str], datetime] = {}
    durations: list[float] = []
    for e in events:
        if e["command_id"]:
            at[(str(e["command_id"]), str(e["event_type"]))] = datetime.fromisoformat(
                str(e["created_at"])
            )
        if e["event_type"] == "command.completed" and e["duration"] is not None:
            durations.append(float(str(e["duration"])) * 1000)
    # created_at is now() of each event's transaction, so a report's outcome and the next
    # command it issues share one timestamp: the report transaction shows up in issued→claimed.
    issued_to_claimed, claimed_to_completed = [], []
    commands = [str(e["command_id"]) for e in events if e["event_type"] == "command.issued"]
    for current in commands:
        issued, claimed = at[(current, "command.issued")], at[(current, "command.claimed")]
        completed = at[(current, "command.completed")]
        issued_to_claimed.append((claimed - issued).total_seconds() * 1000)
        claimed_to_completed.append((completed - claimed).total_seconds() * 1000)
    return {
        "issued→claimed (publish, NATS, fetch, claim tx)": statistics.median(issued_to_claimed),
        "claimed→completed (claim reply, run, report until its tx starts)": statistics.median(
            claimed_to_completed
        ),
        "  of which the tool itself": statistics.median(durations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--result-bytes", type=int, default=0, help="the first step's result size")
    parser.add_argument("--payload-bytes", type=int, default=0, help="the payload's size (about)")
    parser.add_argument(
        "--in-process", action="store_true", help="python steps with isolated: false (threads)"
    )
    args = parser.parse_args()
    text = playbook(args.steps, isolated=not args.in_process, result_bytes=args.result_bytes)
    with cluster(workers=1) as url, httpx.Client(base_url=url, timeout=60) as client:
        entry = client.post("/api/catalog/register", content=text).json()
        # ~8 bytes per id as JSON
        payload = {"ids": list(range(args.payload_bytes // 8))} if args.payload_bytes else {}
        body = {"catalog_id": entry["catalog_id"], "payload": payload}
        run_to_end(client, body)  # warm-up
        rates = []
        for run in range(args.runs):
            started = time.perf_counter()
            execution = run_to_end(client, body)
            wall = time.perf_counter() - started
            assert execution["status"] == "COMPLETED", execution
            server_seconds = float(str(execution["duration_seconds"]))
            rates.append(args.steps / server_seconds)
            print(
                f"run {run + 1}: {args.steps} steps in {server_seconds:.3f} s server time"
                f" ({wall:.3f} s wall, polling included)"
                f" = {args.steps / server_seconds:.0f} steps/s"
            )
        events = client.get(
            f"/api/executions/{execution['execution_id']}/events", params={"limit": 10000}
        ).json()["items"]
        print(f"median {statistics.median(rates):.0f} steps/s over {args.runs} runs")
        print("per-step breakdown of the last run (median ms):")
        for label, value in breakdown(events).items():
            print(f"  {label:<70} {value:6.2f}")


if __name__ == "__main__":
    main()
