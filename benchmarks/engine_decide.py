"""Decisions/s of the pure engine alone, and whether a decision's cost grows with the run.

No server, database or worker: a loop answers each command at once, as the server would
hand the engine one report at a time. Each decision goes through what the server does with
the engine per report: `ExecutionState.from_json` of the stored snapshot, a scan of the step
states for running loops (as `noetl/server/loop_data.py` does), `decide_all`, and `to_json`
of the new state. The cost per decision is printed for the first and the last
tenth of the run (medians): equal figures mean the engine's cost does not grow with the
steps run, and split for the last tenth into the codec (`from_json`, the scan, `to_json`)
and `decide_all`. Times are the thread's CPU time (`time.thread_time`), not wall time: on a shared
machine the wall time of a decision swings with the other load.

    .venv/bin/python -m benchmarks.engine_decide [--runs 3] [--held]

`--held`: each decision starts from the previous decision's state object, not from its JSON
(the server holds an execution's state between reports when it can): no `from_json`.

Workloads: W1-like sequential chains of 100 and 1,000 python steps (step k reads step
k-1's result, as the yardstick's W1), and a 1,000-item parallel loop (max_in_flight 100)
followed by a join step reading the loop's results.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

from noetl.dsl import parse_playbook
from noetl.dsl.model import Playbook
from noetl.engine import CommandCompleted, ExecutionState, Started, decide_all
from noetl.engine.loops import LoopLedger
from noetl.protocol.records import CommandRecord

CODE = "result = {'i': int(p) + 1, 'tag': 's'}"


def sequential(n: int) -> str:
    lines = ["apiVersion: noetl.io/v2", "kind: Playbook", "metadata: {name: w1, path: b/w1}"]
    lines.append("workflow:")
    for k in range(n):
        name = "start" if k == 0 else f"s{k}"
        prev = "0" if k == 0 else ("{{ start.i }}" if k == 1 else f"{{{{ s{k - 1}.i }}}}")
        lines.append(f"  - step: {name}")
        lines.append(f'    tool: {{kind: python, input: {{p: "{prev}"}}, code: "{CODE}"}}')
        if k < n - 1:
            lines.append(f"    next: {{spec: {{mode: exclusive}}, arcs: [{{step: s{k + 1}}}]}}")
    return "\n".join(lines) + "\n"


def parallel_loop(n: int) -> str:
    return f"""apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: w2, path: b/w2}}
workload: {{n: {n}}}
workflow:
  - step: start
    loop: {{in: "{{{{ n }}}}", iterator: i, spec: {{mode: parallel, max_in_flight: 100}}}}
    tool: {{kind: python, input: {{i: "{{{{ iter.i }}}}"}}, code: "result = {{'v': 2 * int(i)}}"}}
    next: {{spec: {{mode: exclusive}}, arcs: [{{step: join}}]}}
  - step: join
    tool: {{kind: python, input: {{rs: "{{{{ start.results }}}}"}}, code: "result = len(rs)"}}
"""


def answer(command: CommandRecord) -> Any:
    """What the worker would return for the benchmark's commands."""
    given = command.input
    if "p" in given:
        return {"i": int(given["p"]) + 1, "tag": "s"}
    if "i" in given:
        return {"v": 2 * int(given["i"])}
    return len(given.get("rs") or ())


def run(playbook: Playbook, held: bool = False) -> list[tuple[float, float]]:
    """Run one execution to its end; for each decision in order, the CPU seconds of the
    codec (`from_json`, the scan of loops, `to_json`) and of `decide_all`."""
    ids = itertools.count(1)
    new_id: Callable[[], int] = lambda: next(ids)  # noqa: E731
    ledger = LoopLedger()
    snapshot = ExecutionState(1).to_json()
    kept: ExecutionState | None = None
    pending: list[CommandRecord] = []
    costs: list[tuple[float, float]] = []
    clock = time.thread_time
    incoming: list[Any] = [Started(dict(playbook.workload), started_at="2026-01-01T00:00:00Z")]
    while incoming:
        began = clock()
        state = kept if kept is not None else ExecutionState.from_json(snapshot)
        running = [
            (name, step.runs)
            for name, step in state.steps.items()
            if step.loop is not None and step.loop.stored
        ]
        assert not running  # the benchmark's loop is over an integer: nothing stored
        parsed = clock()
        decision = decide_all(playbook, state, incoming, new_id=new_id, data=ledger.data())
        decided = clock()
        snapshot = decision.state.to_json()
        kept = decision.state if held else None
        costs.append((parsed - began + clock() - decided, decided - parsed))
        assert not decision.needs, decision.needs
        for change in incoming:  # iteration results, as the server reads them from the log
            ref = state.commands.get(getattr(change, "command_id", ""))
            if ref is not None and ref.iteration is not None:
                ledger.record_result(ref.step, ref.run, ref.iteration, change.result)
        ledger.record_events(decision.events)
        pending.extend(decision.commands)
        if not pending:
            assert decision.state.status == "COMPLETED", decision.state.error
            break
        command = pending.pop(0)
        incoming = [CommandCompleted(command.command_id, answer(command))]
    return costs


def report(label: str, playbook: Playbook, runs: int, held: bool) -> None:
    rates, first, last, codec, decide = [], [], [], [], []
    for _ in range(runs):
        costs = run(playbook, held)
        totals = [a + b for a, b in costs]
        rates.append(len(costs) / sum(totals))
        tenth = max(1, len(costs) // 10)
        first.append(statistics.median(totals[1 : tenth + 1]) * 1e6)  # [0]: the start
        last.append(statistics.median(totals[-tenth - 1 : -1]) * 1e6)  # [-1]: the join / end
        codec.append(statistics.median(a for a, _ in costs[-tenth - 1 : -1]) * 1e6)
        decide.append(statistics.median(b for _, b in costs[-tenth - 1 : -1]) * 1e6)
    print(
        f"{label:<24} {len(costs):>5} decisions {statistics.median(rates):>6,.0f}/s"
        f"  µs/decision: first tenth {statistics.median(first):>5.0f},"
        f" last tenth {statistics.median(last):>5.0f}"
        f" (codec {statistics.median(codec):>4.0f} + decide {statistics.median(decide):>4.0f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--held", action="store_true", help="no JSON between decisions")
    args = parser.parse_args()
    report("sequential, 100 steps", parse_playbook(sequential(100)), args.runs, args.held)
    report("sequential, 1,000 steps", parse_playbook(sequential(1000)), args.runs, args.held)
    report("loop, 1,000 items ∥100", parse_playbook(parallel_loop(1000)), args.runs, args.held)


if __name__ == "__main__":
    main()
