"""Re-run from failure, in the pure engine: what is reused, what runs fresh."""

from __future__ import annotations

from typing import Any

import pytest

from noetl.engine import CommandCompleted, CommandFailed, ExecutionState, Started, decide
from noetl.engine.replay import fold
from noetl.engine.rerun import Recorded, RerunPlan, command_key, plan
from noetl.errors import RequestError
from noetl.protocol.records import CommandRecord
from tests.unit.engine_harness import Harness

HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t}\n"

CHAIN = (
    HEAD
    + """
workload: {boom: true}
workflow:
  - step: start
    tool: {kind: noop, result: {v: 5}}
    set: {ctx.seen: "{{ output.data.v }}"}
    next: [{step: middle, set: {ctx.route: via_start}}]
  - step: middle
    tool: {kind: noop, input: {v: "{{ start.v }}", seen: "{{ ctx.seen }}"}}
    next: [end]
  - {step: end, tool: {kind: noop, result: done}}
"""
)


class Recorder(Harness):
    """A harness that keeps each completed command, as `noetl.event` would."""

    def __init__(self, text: str, execution_id: int = 7) -> None:
        super().__init__(text, execution_id)
        self.completed: list[Recorded] = []
        self.issued: list[CommandRecord] = []

    def drive(self, answer: Any, workload: dict[str, Any] | None = None, **start: Any) -> None:
        self.apply(Started({**self.playbook.workload, **(workload or {})}, **start))
        while self.pending:
            command = self.pending.pop(0)
            self.issued.append(command)
            ok, value = answer(command)
            if ok:
                key = command.command_id.split(":", 1)[1]
                self.completed.append(Recorded(key, command.step, value))
                self.apply(CommandCompleted(command.command_id, value))
            else:
                self.apply(CommandFailed(command.command_id, str(value)))


def fail_on(step: str, iteration: int | None = None) -> Any:
    def answer(command: CommandRecord) -> tuple[bool, Any]:
        if command.step == step and (iteration is None or command.iteration == iteration):
            return False, f"{step} broke"
        return True, command.tool.get("result", {"step": command.step, **command.input})

    return answer


def succeed(command: CommandRecord) -> tuple[bool, Any]:
    return True, command.tool.get("result", {"step": command.step, **command.input})


def rerun(original: Recorder, text: str, **how: Any) -> tuple[Recorder, RerunPlan]:
    again = Recorder(text, execution_id=8)
    items = original.replayer.ledger.items
    chosen = plan(again.playbook, original.state, original.completed, items=items, **how)
    return again, chosen


def test_a_rerun_from_the_failed_step_reuses_upstream_results_and_variables() -> None:
    first = Recorder(CHAIN)
    first.drive(fail_on("middle"))
    assert first.state.status == "FAILED"
    again, chosen = rerun(first, CHAIN)
    assert chosen.restart == ("middle",) and chosen.fresh == {"middle", "end"}
    assert set(chosen.reuse) == {"start"}
    again.drive(succeed, reuse=chosen.reuse)
    assert again.state.status == "COMPLETED" and again.state.result == "done"
    assert [c.step for c in again.issued] == ["middle", "end"]
    middle = again.issued[0]
    assert middle.input == {"v": 5, "seen": 5}  # start's result and `set` are visible
    assert again.state.variables == {"seen": 5, "route": "via_start"}
    assert again.kinds("start") == ["step.enter", "command.reused", "step.exit"]
    assert again.state.reuse == {}


def test_a_rerun_from_a_named_step_runs_it_and_everything_after_it_fresh() -> None:
    first = Recorder(CHAIN)
    first.drive(succeed)
    assert first.state.status == "COMPLETED"
    again, chosen = rerun(first, CHAIN, from_step="end")
    again.drive(succeed, reuse=chosen.reuse)
    assert [c.step for c in again.issued] == ["end"]
    assert again.state.status == "COMPLETED"
    assert again.state.results["middle"] == first.state.results["middle"]


def test_from_failed_on_an_execution_without_failure_is_refused() -> None:
    first = Recorder(CHAIN)
    first.drive(succeed)
    with pytest.raises(RequestError, match="no failed or unfinished step"):
        plan(first.playbook, first.state, first.completed)


def test_an_unknown_restart_step_is_refused_naming_the_steps() -> None:
    first = Recorder(CHAIN)
    first.drive(fail_on("middle"))
    with pytest.raises(RequestError, match="'nope' is not in the playbook"):
        plan(first.playbook, first.state, first.completed, from_step="nope")


LOOP = (
    HEAD
    + """
workload: {items: [1, 2, 3, 4]}
workflow:
  - {step: start, tool: {kind: noop, result: ready}, next: [each]}
  - step: each
    loop: {in: "{{ items }}", iterator: n, spec: {mode: parallel, max_in_flight: 2}}
    tool: {kind: noop, input: {n: "{{ n }}"}}
    next: [end]
  - {step: end, tool: {kind: noop, input: {all: "{{ each.results }}"}}}
"""
)


def test_a_failed_loop_reruns_only_its_failed_iterations() -> None:
    first = Recorder(LOOP)
    first.drive(fail_on("each", iteration=2))
    assert first.state.status == "FAILED"
    ran_before = [c.iteration for c in first.issued if c.step == "each"]
    again, chosen = rerun(first, LOOP)
    again.drive(succeed, reuse=chosen.reuse)
    assert again.state.status == "COMPLETED"
    fresh = [c.iteration for c in again.issued if c.step == "each"]
    succeeded_before = {
        int(r.key.split("[")[1].rstrip("]")) for r in first.completed if r.step == "each"
    }
    assert set(fresh) == set(range(4)) - succeeded_before
    assert 2 in fresh and set(ran_before) >= succeeded_before
    results = again.issued[-1].input["all"]  # `end` reads the loop's results
    assert results == [{"step": "each", "n": n} for n in (1, 2, 3, 4)]
    assert [c.step for c in again.issued if c.step != "each"] == ["end"]


def test_a_loop_iteration_over_a_different_item_is_not_reused() -> None:
    first = Recorder(LOOP)
    first.drive(fail_on("each", iteration=3))
    again, chosen = rerun(first, LOOP)
    again.drive(succeed, {"items": [1, 20, 3, 4]}, reuse=chosen.reuse)
    fresh = sorted(c.iteration for c in again.issued if c.iteration is not None)
    assert fresh == [1, 3]
    assert again.issued[-1].input["all"][1] == {"step": "each", "n": 20}


FAN = (
    HEAD
    + """
workflow:
  - step: start
    tool: {kind: noop, result: s}
    next: {spec: {mode: inclusive}, arcs: [{step: a}, {step: b}]}
  - {step: a, tool: {kind: noop, result: a}, next: [join]}
  - {step: b, tool: {kind: noop, result: b}, next: [join]}
  - {step: join, tool: {kind: noop, input: {a: "{{ a }}", b: "{{ b }}"}}}
"""
)


def test_a_branch_beside_the_failed_one_is_reused_and_the_join_runs_fresh() -> None:
    first = Recorder(FAN)
    first.drive(fail_on("b"))
    assert first.state.steps["a"].status == "completed"
    again, chosen = rerun(first, FAN)
    assert set(chosen.reuse) == {"start", "a"}
    again.drive(succeed, reuse=chosen.reuse)
    assert sorted(c.step for c in again.issued) == ["b", "join"]
    assert again.issued[-1].input == {"a": "a", "b": "b"}


def test_variables_a_pipeline_set_on_the_worker_are_reused() -> None:
    first = Recorder(CHAIN)
    first.drive(fail_on("middle"))
    start = first.completed[0]
    with_vars = Recorded(start.key, start.step, start.result, {"token": "abc"})
    again = Recorder(CHAIN, execution_id=8)
    chosen = plan(again.playbook, first.state, [with_vars])
    again.drive(succeed, reuse=chosen.reuse)
    assert again.state.variables["token"] == "abc"


def test_a_rerun_folds_back_to_the_same_state_from_its_events() -> None:
    first = Recorder(LOOP)
    first.drive(fail_on("each", iteration=1))
    again, chosen = rerun(first, LOOP)
    again.drive(succeed, reuse=chosen.reuse)
    stored: list[dict[str, Any]] = [
        {
            "event_type": "playbook.initialized",
            "payload": {"workload": dict(again.playbook.workload), "rerun": chosen.to_json()},
        }
    ]
    for command in again.issued:
        stored.append(
            {
                "event_type": "command.completed",
                "command_id": command.command_id,
                "result": succeed(command)[1],
                "payload": None,
            }
        )
    state = fold(again.playbook, 8, stored)
    assert state.to_json() == again.state.to_json()
    assert any(e.event_type == "command.reused" for e in again.events)


def test_command_keys_match_the_engine_command_ids() -> None:
    assert command_key("a", 1) == "a"
    assert command_key("a", 2, 3) == "a#2[3]"
    assert Recorded("each#2[3]", "each").run_and_iteration == (2, 3)
    assert Recorded("each", "each").run_and_iteration == (1, None)


def test_a_snapshot_with_a_reuse_map_round_trips() -> None:
    state = ExecutionState(3, reuse={"a": {"result": 1}})
    assert ExecutionState.from_json(state.to_json()).reuse == {"a": {"result": 1}}
    assert "reuse" not in ExecutionState(3).to_json()


def test_reuse_of_a_state_never_changes_the_state_it_came_from() -> None:
    first = Recorder(CHAIN)
    first.drive(fail_on("middle"))
    again, chosen = rerun(first, CHAIN)
    started = decide(again.playbook, ExecutionState(8), Started({}, chosen.reuse), new_id=lambda: 1)
    assert chosen.reuse == {"start": {"result": {"v": 5}}}
    assert started.state.reuse == {}
