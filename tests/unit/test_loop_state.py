"""Loop items and results live in the event log, not in the state: the snapshot only counts."""

from __future__ import annotations

import itertools
import json

from noetl.dsl import parse_playbook
from noetl.engine import CommandCompleted, ExecutionState, Started, decide_all
from noetl.engine.loops import LoopData, Need, iteration_of
from tests.unit.engine_harness import Harness

HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t}\n"


def _loop(n: int) -> str:
    return (
        HEAD + "workflow:\n  - step: start\n"
        f"    loop: {{in: {n}, iterator: i, spec: {{mode: parallel, max_in_flight: 5}}}}\n"
        "    tool: {kind: noop}\n"
    )


def _snapshot_after(n: int, completions: int) -> str:
    h = Harness(_loop(n))
    h.start()
    for _ in range(completions):
        command = h.pending.pop(0)
        h.apply(CommandCompleted(command.command_id, {"i": command.iteration, "pad": "x" * 50}))
    return json.dumps(h.state.to_json())


def test_the_snapshot_of_a_running_loop_does_not_grow_with_its_items_or_results() -> None:
    small, large = _snapshot_after(20, 8), _snapshot_after(100_000, 8)
    assert len(large) - len(small) <= 10  # only the digits of the count differ
    many_done = _snapshot_after(100_000, 2_000)
    assert len(many_done) - len(large) <= 60  # 2,000 results later: only longer indices
    assert "pad" not in many_done


LIST_LOOP = (
    HEAD
    + """workload: {names: [ann, bob, cy]}
workflow:
  - step: a
    loop: {in: "{{ names }}", iterator: who, spec: {mode: sequential}}
    tool: {kind: noop, input: {who: "{{ who }}"}}
    next: [b]
  - step: b
    tool: {kind: noop}
    next: [c]
  - step: c
    tool: {kind: noop, input: {all: "{{ a.results }}", n: "{{ a.count }}"}}
"""
)


def test_a_list_loop_keeps_its_items_in_the_step_enter_event_and_asks_for_them() -> None:
    playbook = parse_playbook(LIST_LOOP)
    ids = itertools.count(1)
    first = decide_all(
        playbook,
        ExecutionState(5),
        [Started({"names": ["ann", "bob", "cy"]})],
        new_id=lambda: next(ids),
    )
    enter = [e for e in first.events if e.event_type == "step.enter"]
    assert enter[0].payload == {"run": 1, "items": ["ann", "bob", "cy"]}
    assert "ann" not in json.dumps(first.state.to_json()["steps"])
    assert [c.input for c in first.commands] == [{"who": "ann"}]

    done = CommandCompleted(first.commands[0].command_id, "A")
    asked = decide_all(playbook, first.state, [done], new_id=lambda: next(ids))
    assert asked.needs == (Need("items", "a", 1),)
    assert asked.events == () and asked.commands == () and asked.state is first.state

    given = LoopData(items={("a", 1): ["ann", "bob", "cy"]})
    second = decide_all(playbook, first.state, [done], new_id=lambda: next(ids), data=given)
    assert [c.input for c in second.commands] == [{"who": "bob"}]
    assert iteration_of(second.commands[0].command_id) == 1


def test_a_later_step_reading_a_finished_loop_gets_its_results_from_the_caller() -> None:
    h = Harness(LIST_LOOP)
    h.start({"names": ["ann", "bob", "cy"]})
    for value in ("A", "B", "C"):
        command = h.pending.pop(0)
        h.apply(CommandCompleted(command.command_id, value))
    assert h.state.results["a"] == {
        "count": 3,
        "succeeded": 3,
        "failed": 0,
        "stats": {"total": 3, "success": 3, "failed": 0},
    }
    b = h.pending.pop(0)
    assert b.step == "b"
    done = CommandCompleted(b.command_id, None)
    ids = itertools.count(9000)
    asked = decide_all(h.playbook, h.state, [done], new_id=lambda: next(ids))
    assert asked.needs == (Need("results", "a", 1),)
    data = LoopData(results={("a", 1): ["A", "B", "C"]})
    decision = decide_all(h.playbook, h.state, [done], new_id=lambda: next(ids), data=data)
    (c,) = decision.commands
    assert c.input == {"all": ["A", "B", "C"], "n": 3}
    assert "results" not in decision.state.results["a"]  # still only the summary


def test_a_step_reading_only_a_finished_loops_counts_does_not_ask_for_its_results() -> None:
    """`{{ a.count }}` (succeeded, failed, stats) is in the summary the state holds: a
    million results are not read from the log for it (they were, before)."""
    text = LIST_LOOP.replace(
        'input: {all: "{{ a.results }}", n: "{{ a.count }}"}',
        'input: {n: "{{ a.count }}", ok: "{{ a[\'succeeded\'] == a.count }}",'
        ' stats: "{{ a.stats }}"}',
    ).replace(
        "tool: {kind: noop}\n    next: [c]",
        "tool: {kind: noop}\n    set: {ctx.f: '{{ a.failed }}'}\n    next: [c]",
    )
    h = Harness(text)
    h.start({"names": ["ann", "bob", "cy"]})
    for value in ("A", "B", "C"):
        command = h.pending.pop(0)
        h.apply(CommandCompleted(command.command_id, value))
    b = h.pending.pop(0)
    ids = itertools.count(9000)
    decision = decide_all(
        h.playbook, h.state, [CommandCompleted(b.command_id, None)], new_id=lambda: next(ids)
    )
    assert decision.needs == ()
    (c,) = decision.commands
    assert c.input == {"n": 3, "ok": True, "stats": {"total": 3, "success": 3, "failed": 0}}
    assert decision.state.variables["f"] == 0


def test_an_integer_loop_iterates_its_range_and_stores_no_items() -> None:
    h = Harness(_loop(3))
    h.start()
    enter = [e for e in h.events if e.event_type == "step.enter"]
    assert enter[0].payload == {"run": 1}
    assert [c.iteration for c in h.pending] == [0, 1, 2]


def test_a_state_copy_keeps_every_field_and_owns_what_the_engine_changes() -> None:
    """`copy` calls the constructors field by field (dataclasses.replace was a hot spot):
    a field added later and left out of `copy` fails here."""
    import dataclasses

    from noetl.engine.state import CommandRef, ExecutionState, LoopState, StepState

    loop = LoopState(
        5, True, 3, 2, 1, 0, True, 4, 2, [{"id": 1}], 3, "iteration 1: boom", {"status": 500}
    )
    step = StepState("RUNNING", 2, ["a"], ["b"], loop, "a")
    state = ExecutionState(
        7,
        "RUNNING",
        {"w": 1},
        {"v": 2},
        {"a": {"x": 1}},
        {"s": step},
        {"c": CommandRef("s", 2, 1)},
        {"r": 1},
        "err",
        "a",
        {"l": 1},
        {"k": {"y": 2}},
        "2026-11-30T16:00:00+00:00",
    )
    for original in (loop, step, state):
        assert all(getattr(original, f.name) is not None for f in dataclasses.fields(original))
        assert original.copy() == original
    copied = state.copy()
    copied.steps["s"].arrived.append("z")
    copied.steps["s"].loop.in_flight += 1  # type: ignore[union-attr]
    copied.results["b"] = 1
    copied.commands.pop("c")
    copied.collected["m"] = 2
    assert state == ExecutionState.from_json(state.to_json())  # the original is untouched
    assert step.arrived == ["a"] and loop.in_flight == 2 and "b" not in state.results
