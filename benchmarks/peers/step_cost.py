"""CPU per step of the yardstick's W1 (or per item of W2), by process: server, workers (with
their python children), PostgreSQL, NATS. On a shared machine the wall time of a run swings
with the other load; the CPU seconds a step costs each process swing much less, so compare
those (and run the checkouts being compared alternately).

    .venv/bin/python benchmarks/peers/step_cost.py                  # W1, 8 measured runs
    .venv/bin/python benchmarks/peers/step_cost.py --workload W2 --runs 3
    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/peers/step_cost.py

Uses the session's yardstick (`stack.py`, `ours.py` of shared/bench, found as
benchmarks/peers/run.sh finds it, or NOETL_YARDSTICK) with `noetl` of the running Python's
folder (PYTHONPATH picks the code, so two checkouts can share one virtualenv).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]


def _yardstick() -> Path:
    given = os.environ.get("NOETL_YARDSTICK")
    candidates = [Path(given)] if given else []
    candidates += [parent / "shared" / "bench" for parent in list(ROOT.parents)[:2]]
    candidates.append(Path("/work/shared/bench"))
    for candidate in candidates:
        if (candidate / "stack.py").exists():
            return candidate
    raise SystemExit("no yardstick: set NOETL_YARDSTICK to the folder of stack.py")


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _tree(pid: int) -> list[int]:
    try:
        process = psutil.Process(pid)
        return [pid, *(child.pid for child in process.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", choices=["W1", "W2"], default="W1")
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    bench = _yardstick()
    sys.path.insert(0, str(bench))
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    import ours
    from stack import Stack

    w1 = args.workload == "W1"
    units = ours.N_SEQ if w1 else ours.N_FAN
    text, path = (ours.w1_yaml(units), "bench/w1") if w1 else (ours.w2_yaml(units), "bench/w2")
    with Stack(workers=1 if w1 else 2, worker_concurrency=50) as stack:
        stack.register(text)
        ours.run_once(stack, path)  # warm-up: python children started, statements prepared
        names = ["nats", "server", *(f"worker{i}" for i in range(len(stack.workers)))]
        pg = int((Path(stack.root) / "pg" / "postmaster.pid").read_text().split()[0])

        def groups() -> dict[str, list[int]]:
            found = {name: _tree(p.pid) for name, p in zip(names, stack.procs, strict=False)}
            return {**found, "postgres": _tree(pg)}

        def commits() -> int:
            rows = stack.sql(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            )
            return int(rows[0][0])

        before = {name: _cpu(pids) for name, pids in groups().items()}
        committed = commits()
        walls = []
        for _ in range(args.runs):
            started = time.perf_counter()
            _, _, execution = ours.run_once(stack, path)
            walls.append(time.perf_counter() - started)
            assert execution["status"] == "COMPLETED", execution
        after = {name: _cpu(pids) for name, pids in groups().items()}
        done = units * args.runs
        per_unit = {
            name: round(1000 * (after[name] - before.get(name, 0.0)) / done, 3) for name in after
        }
        print(
            json.dumps(
                {
                    "workload": args.workload,
                    "load_average": round(os.getloadavg()[0], 2),
                    "units_per_s": round(units / statistics.median(walls), 1),
                    "cpu_ms_per_unit": {**per_unit, "total": round(sum(per_unit.values()), 3)},
                    "commits_per_unit": round((commits() - committed) / done, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
