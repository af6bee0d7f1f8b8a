"""Two checkouts side by side: W1 (or W2) runs alternating between two stacks started at
once, each running one checkout's code (PYTHONPATH), so that both see the same moments of a
shared machine's load. Prints, per checkout, the median units/s and the median CPU ms per
unit of its server, workers (with their python children) and PostgreSQL, and of each of these
alone (`by_process`, the mean over the rounds: server, worker processes, their python
children, PostgreSQL).

    .venv/bin/python benchmarks/peers/ab.py BEFORE_DIR AFTER_DIR [--workload W2] [--rounds 15]

BEFORE_DIR / AFTER_DIR: source trees (`git archive <commit> | tar -x -C DIR`, or a
worktree); both run with this virtualenv's packages. Uses the yardstick's `stack.py` and
`ours.py` as `step_cost.py` finds them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_cost import _cpu, _tree, _yardstick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--workload", choices=["W1", "W2"], default="W1")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    sys.path.insert(0, str(_yardstick()))
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    import ours
    from stack import Stack

    w1 = args.workload == "W1"
    units = ours.N_SEQ if w1 else ours.N_FAN
    text, path = (ours.w1_yaml(units), "bench/w1") if w1 else (ours.w2_yaml(units), "bench/w2")
    stacks: dict[str, Stack] = {}

    def cpu(stack: Stack) -> dict[str, float]:
        pg = int((Path(stack.root) / "pg" / "postmaster.pid").read_text().split()[0])
        workers = [p.pid for p in stack.workers]
        children = [pid for worker in workers for pid in _tree(worker)[1:]]
        return {
            "server": _cpu(_tree(stack.procs[1].pid)),
            "workers": _cpu(workers),
            "python children": _cpu(children),
            "postgres": _cpu(_tree(pg)),
        }

    try:
        for name in ("before", "after"):
            os.environ["PYTHONPATH"] = str(Path(getattr(args, name)).resolve())
            stack = Stack(workers=1 if w1 else 2, worker_concurrency=50).start()
            stacks[name] = stack
            stack.register(text)
            for _ in range(2):  # warm-up: python children started, statements prepared
                ours.run_once(stack, path)
        walls: dict[str, list[float]] = {name: [] for name in stacks}
        cpus: dict[str, list[float]] = {name: [] for name in stacks}
        parts: dict[str, dict[str, list[float]]] = {name: {} for name in stacks}
        for index in range(args.rounds):
            order = ("before", "after") if index % 2 == 0 else ("after", "before")
            for name in order:
                stack = stacks[name]
                spent = cpu(stack)
                wall, _, execution = ours.run_once(stack, path)
                assert execution["status"] == "COMPLETED", execution
                spent_now = cpu(stack)
                for part, seconds in spent_now.items():
                    used = 1000 * (seconds - spent[part]) / units
                    parts[name].setdefault(part, []).append(used)
                cpus[name].append(1000 * (sum(spent_now.values()) - sum(spent.values())) / units)
                walls[name].append(wall)
        for name in stacks:
            print(
                json.dumps(
                    {
                        "checkout": name,
                        "workload": args.workload,
                        "units_per_s": round(units / statistics.median(walls[name]), 1),
                        "cpu_ms_per_unit": round(statistics.median(cpus[name]), 3),
                        "by_process": {  # means: a run is a few clock ticks of a child's CPU
                            part: round(statistics.mean(used), 3)
                            for part, used in parts[name].items()
                        },
                        "load_average": round(os.getloadavg()[0], 2),
                    }
                )
            )
    finally:
        for stack in stacks.values():
            stack.stop()


if __name__ == "__main__":
    main()
