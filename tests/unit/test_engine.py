"""The engine decides routing, fan-out/fan-in, loops and failure without any I/O."""

from __future__ import annotations

from noetl.engine import CommandCompleted, CommandFailed, decide_all, give_up
from noetl.engine.state import CommandRef
from tests.unit.engine_harness import Harness

HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t}\n"


def test_sequential_steps_run_in_order_and_the_last_result_is_the_result() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - {step: start, tool: {kind: noop, result: 1}, next: [b]}
  - {step: b, tool: {kind: noop, result: 2}, next: [end]}
  - {step: end, tool: {kind: noop, result: 3}}
"""
    )
    state = h.run()
    assert state.status == "COMPLETED" and state.result == 3
    assert [e.step for e in h.events if e.event_type == "step.enter"] == ["start", "b", "end"]
    assert h.kinds()[-1] == "playbook.completed"


def test_exclusive_arcs_fire_the_first_true_arc_and_skip_the_rest() -> None:
    h = Harness(
        HEAD
        + """
workload: {t: 30}
workflow:
  - step: start
    tool: {kind: noop, result: {hot: true}}
    next:
      arcs:
        - {step: hot, when: "{{ start.hot and t > 25 }}", set: {ctx.route: hot}}
        - {step: cold}
  - {step: hot, tool: {kind: noop, result: h}}
  - {step: cold, tool: {kind: noop, result: c}}
"""
    )
    state = h.run()
    assert state.result == "h" and state.variables == {"route": "hot"}
    assert h.kinds("cold") == ["step.skipped"]


def test_inclusive_fan_out_joins_once_after_both_branches() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop}
    next: {spec: {mode: inclusive}, arcs: [{step: a}, {step: b}]}
  - {step: a, tool: {kind: noop, result: a}, next: [join]}
  - {step: b, tool: {kind: noop, result: b}, next: [join]}
  - {step: join, tool: {kind: noop, result: joined}}
"""
    )
    h.start()
    [start] = h.pending
    h.pending.clear()
    h.apply(CommandCompleted(start.command_id, {}))
    a, b = h.pending
    h.pending.clear()
    h.apply(CommandCompleted(a.command_id, "a"))
    assert h.pending == []  # the join waits for b
    h.apply(CommandCompleted(b.command_id, "b"))
    assert [c.step for c in h.pending] == ["join"]
    assert h.kinds("join").count("step.enter") == 1


def test_a_join_behind_an_untaken_branch_still_runs() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop}
    next: [{step: a, when: "{{ true }}"}, {step: b}]
  - {step: a, tool: {kind: noop}, next: [join]}
  - {step: b, tool: {kind: noop}, next: [join]}
  - {step: join, tool: {kind: noop, result: done}}
"""
    )
    state = h.run()
    assert state.status == "COMPLETED" and state.result == "done"
    assert h.kinds("b") == ["step.skipped"]


def test_a_back_edge_reruns_the_step_until_its_condition_is_false() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop}
    set: {ctx.page: "{{ (ctx.page | default(0)) + 1 }}"}
    next: [{step: start, when: "{{ ctx.page < 3 }}"}, {step: end}]
  - {step: end, tool: {kind: noop, result: last}}
"""
    )
    state = h.run()
    assert state.variables["page"] == 3 and state.result == "last"
    assert h.kinds("start").count("step.enter") == 3
    assert "step.skipped" not in h.kinds("end")


def test_a_tool_error_fails_the_execution_with_the_error() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - {step: start, tool: {kind: noop}, next: [boom]}
  - {step: boom, tool: {kind: noop}, next: [end]}
  - {step: end, tool: {kind: noop}}
"""
    )
    state = h.run(lambda c: (c.step != "boom", "ValueError: bad"))
    assert state.status == "FAILED"
    assert state.error == "step 'boom' failed: ValueError: bad"
    assert "end" not in state.steps
    assert h.kinds()[-1] == "playbook.failed"


def test_a_failure_cancels_commands_still_in_flight() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop}
    next: {spec: {mode: inclusive}, arcs: [{step: a}, {step: b}]}
  - {step: a, tool: {kind: noop}}
  - {step: b, tool: {kind: noop}}
"""
    )
    h.start()
    h.apply(CommandCompleted(h.pending.pop(0).command_id, {}))
    a, b = h.pending
    decision = h.apply(CommandFailed(a.command_id, "nope"))
    assert decision.cancelled == (b.command_id,)
    assert decision.state.status == "FAILED" and decision.state.commands == {}


def test_a_duplicate_completion_changes_nothing() -> None:
    h = Harness(
        HEAD + "workflow:\n  - {step: start, tool: {kind: noop}, next: [end]}\n"
        "  - {step: end, tool: {kind: noop}}\n"
    )
    h.start()
    start = h.pending.pop(0)
    h.apply(CommandCompleted(start.command_id, 1))
    before = h.state.to_json()
    decision = h.apply(CommandCompleted(start.command_id, 1))
    assert decision.events == () and decision.commands == ()
    assert h.state.to_json() == before


def test_loop_results_are_collected_in_iteration_order() -> None:
    h = Harness(
        HEAD
        + """
workload: {items: [3, 1, 2]}
workflow:
  - step: start
    loop: {in: "{{ items }}", iterator: x, spec: {mode: parallel, max_in_flight: 2}}
    tool: {kind: python, input: {x: "{{ x }}", i: "{{ iter._index }}"}, code: "result = x"}
"""
    )
    h.start()
    assert len(h.pending) == 2  # max_in_flight
    first, second = h.pending
    h.pending.clear()
    h.apply(CommandCompleted(second.command_id, second.input["x"] * 10))
    [third] = h.pending
    h.pending.clear()
    h.apply(CommandCompleted(third.command_id, third.input["x"] * 10))
    h.apply(CommandCompleted(first.command_id, first.input["x"] * 10))
    assert h.state.status == "COMPLETED"
    assert h.state.result == {
        "results": [30, 10, 20],
        "count": 3,
        "succeeded": 3,
        "failed": 0,
        "stats": {"total": 3, "success": 3, "failed": 0},
    }
    assert [c.input["i"] for c in (first, second, third)] == [0, 1, 2]


def test_an_empty_loop_completes_the_step_at_once() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    loop: {in: [], iterator: x}
    tool: {kind: noop}
"""
    )
    state = h.run()
    assert state.status == "COMPLETED" and state.result["count"] == 0


def test_sequential_loop_issues_one_iteration_at_a_time() -> None:
    h = Harness(
        HEAD + "workflow:\n  - step: start\n    loop: {in: 3, iterator: i}\n"
        "    tool: {kind: noop}\n"
    )
    h.start()
    assert len(h.pending) == 1


def test_an_undefined_name_in_a_condition_is_false_and_recorded() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop}
    next: [{step: a, when: "{{ nothing.here }}"}, {step: b}]
  - {step: a, tool: {kind: noop}}
  - {step: b, tool: {kind: noop, result: b}}
"""
    )
    state = h.run()
    assert state.result == "b"
    [exit_event] = [e for e in h.events if e.event_type == "step.exit" and e.step == "start"]
    assert "nothing" in exit_event.payload["problems"][0]


def test_workbook_tools_run_with_merged_input() -> None:
    h = Harness(
        HEAD
        + """
workload: {t: 30}
workbook:
  - name: flag
    tool: {kind: python, input: {t: 0, unit: c}, code: "result = t"}
workflow:
  - step: start
    tool: {kind: workbook, name: flag, input: {t: "{{ t }}"}}
"""
    )
    h.start()
    [command] = h.pending
    assert command.tool["kind"] == "python" and command.input == {"t": 30, "unit": "c"}


def test_nothing_is_decided_after_the_execution_ended() -> None:
    h = Harness(HEAD + "workflow:\n  - {step: start, tool: {kind: noop}}\n")
    h.run(lambda c: (False, "x"))
    decision = h.apply(CommandCompleted("7:start", 1))
    assert decision.events == () and decision.state.status == "FAILED"


def test_deciding_a_batch_equals_deciding_its_events_one_by_one() -> None:
    text = (
        HEAD
        + """
workload: {items: [1, 2, 3, 4]}
workflow:
  - step: start
    loop: {in: "{{ items }}", iterator: x, spec: {mode: parallel, max_in_flight: 4}}
    tool: {kind: noop}
    next: [end]
  - {step: end, tool: {kind: noop, result: done}}
"""
    )
    one, many = Harness(text), Harness(text)
    one.start()
    many.start()
    started = len(one.events)
    completions = [CommandCompleted(c.command_id, i) for i, c in enumerate(one.pending)]
    for completion in completions:
        one.apply(completion)
    batch = decide_all(many.playbook, many.state, completions, new_id=lambda: next(many.ids))
    assert batch.state.to_json() == one.state.to_json()
    assert [e.event_type for e in batch.events] == [e.event_type for e in one.events[started:]]


def test_a_loop_over_too_many_items_fails_the_step_instead_of_exhausting_memory() -> None:
    h = Harness(
        HEAD + "workflow:\n  - step: start\n    loop: {in: 1000000000, iterator: i}\n"
        "    tool: {kind: noop}\n"
    )
    state = h.run()
    assert state.status == "FAILED"
    assert "more than a loop takes" in (state.error or "")


def test_giving_up_fails_the_execution_and_cancels_what_is_pending() -> None:
    h = Harness(HEAD + "workflow:\n  - {step: start, tool: {kind: noop}}\n")
    h.start()
    decision = give_up(h.playbook, h.state, "internal error", new_id=lambda: next(h.ids))
    assert decision.state.status == "FAILED" and decision.state.error == "internal error"
    assert decision.cancelled == (h.pending[0].command_id,)
    assert [e.event_type for e in decision.events][-1] == "playbook.failed"


def test_an_internal_error_is_a_failed_execution_not_an_exception() -> None:
    steps = "  - {step: start, tool: {kind: noop}, next: [b]}\n  - {step: b, tool: {kind: noop}}\n"
    h = Harness(HEAD + "workflow:\n" + steps)
    h.start()
    [first] = h.pending
    broken = h.state.copy()
    broken.commands[first.command_id] = CommandRef("no-such-step", 1)  # a corrupt snapshot
    decision = decide_all(
        h.playbook, broken, [CommandCompleted(first.command_id, 1)], new_id=lambda: next(h.ids)
    )
    assert decision.state.status == "FAILED"
    assert (decision.state.error or "").startswith("internal error in the engine: KeyError")
    assert decision.cancelled == ()  # the reported command is settled, not cancelled
    assert [e.event_type for e in decision.events] == ["playbook.failed"]


def test_every_arc_s_when_is_decided_before_any_fired_arc_s_set() -> None:
    # DSL.md §3: step set -> arcs' when -> the fired arcs' set. An arc's set changed what a
    # later arc's `when` read, so the second arc below did not fire.
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop}
    next:
      spec: {mode: inclusive}
      arcs:
        - {step: a, set: {ctx.taken: a}}
        - {step: b, when: "{{ ctx.taken is not defined }}", set: {ctx.also: b}}
  - {step: a, tool: {kind: noop, result: a}}
  - {step: b, tool: {kind: noop, result: b}}
"""
    )
    state = h.run()
    assert h.kinds("b")[0] == "step.enter"
    assert state.variables == {"taken": "a", "also": "b"}


def test_a_templated_max_in_flight_over_the_limit_fails_the_step() -> None:
    h = Harness(
        HEAD
        + """
workload: {cap: 1000000}
workflow:
  - step: start
    loop: {in: "{{ 50000 }}", iterator: i, spec: {mode: parallel, max_in_flight: "{{ cap }}"}}
    tool: {kind: noop}
"""
    )
    state = h.run()
    assert state.status == "FAILED" and "over the limit of 10000" in (state.error or "")
    assert h.kinds("start").count("command.issued") == 0
