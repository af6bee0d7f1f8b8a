"""Upstream NoETL constructs in the pure engine: event names, failure routing, admission,
on_no_match, templated max_in_flight, cursor loops, the root spec and job variables."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from noetl.dsl.semantics import CALL_DONE, CALL_ERROR, LOOP_DONE
from noetl.engine import CommandCompleted, CommandFailed
from tests.unit.engine_harness import Harness

HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t}\n"


def test_arcs_see_upstreams_event_names_call_done_and_loop_done() -> None:
    assert (CALL_DONE, CALL_ERROR, LOOP_DONE) == ("call.done", "call.error", "loop.done")
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop, result: 1}
    next:
      arcs:
        - {step: each, when: "{{ event.name == 'call.done' }}"}
  - step: each
    loop: {in: [1, 2], iterator: x}
    tool: {kind: noop, result: 2}
    next:
      arcs:
        - {step: end, when: "{{ event.name == 'loop.done' }}"}
  - {step: end, tool: {kind: noop, result: done}}
"""
    )
    state = h.run()
    assert state.status == "COMPLETED" and state.result == "done"


ROUTED = (
    HEAD
    + """
workflow:
  - step: start
    tool: {kind: python, code: "raise ValueError('x')"}
    next:
      arcs:
        - {step: ok, when: "{{ event.name == 'call.done' }}"}
        - step: recover
          when: "{{ event.name == 'call.error' }}"
          set: {ctx.why: "{{ output.error.message }}"}
  - {step: ok, tool: {kind: noop, result: ok}}
  - {step: recover, tool: {kind: noop, result: recovered}}
"""
)


def test_an_arc_guarded_on_call_error_routes_a_failure_instead_of_failing_the_run() -> None:
    h = Harness(ROUTED)
    state = h.run(
        lambda command: (
            (True, command.tool.get("result")) if command.step != "start" else (False, "boom")
        )
    )
    assert state.status == "COMPLETED" and state.result == "recovered"
    assert state.variables == {"why": "boom"}
    exit_ = next(e for e in h.events if e.step == "start" and e.event_type == "step.exit")
    assert exit_.status == "failed" and exit_.payload == {"next": ["recover"], "handled": True}
    assert h.kinds("ok") == ["step.skipped"]


def test_a_guard_that_does_not_read_the_outcome_does_not_swallow_a_failure() -> None:
    h = Harness(
        HEAD
        + """
workload: {more: false}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      arcs:
        - {step: end, when: "{{ not more }}"}
        - {step: end}
  - {step: end, tool: {kind: noop}}
"""
    )
    state = h.run(lambda command: (False, "boom"))
    assert state.status == "FAILED" and "boom" in (state.error or "")
    assert "end" not in [e.step for e in h.events if e.event_type == "step.enter"]


def test_admission_rules_skip_a_step_that_is_not_admitted() -> None:
    text = (
        HEAD
        + """
workload: {enabled: false}
workflow:
  - {step: start, tool: {kind: noop, result: 1}, next: [guarded]}
  - step: guarded
    spec:
      policy:
        admit:
          rules:
            - {when: "{{ enabled }}", then: {allow: true}}
            - else:
              then: {allow: false}
    tool: {kind: noop, result: ran}
    next: [end]
  - {step: end, tool: {kind: noop, result: end}}
"""
    )
    h = Harness(text)
    state = h.run()
    assert h.kinds("guarded") == ["step.skipped"]
    assert h.kinds("end") == ["step.skipped"] and state.status == "COMPLETED"
    h = Harness(text)
    state = h.run(workload={"enabled": True})
    assert "step.enter" in h.kinds("guarded") and state.result == "end"


def test_on_no_match_fail_fails_the_run_when_no_arc_fires() -> None:
    text = (
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop}
    next:
      spec: {on_no_match: MODE}
      arcs: [{step: end, when: "{{ false }}"}]
  - {step: end, tool: {kind: noop}}
"""
    )
    assert Harness(text.replace("MODE", "quiet")).run().status == "COMPLETED"
    state = Harness(text.replace("MODE", "fail")).run()
    assert state.status == "FAILED" and "on_no_match" in (state.error or "")


def test_a_templated_max_in_flight_caps_parallel_iterations() -> None:
    text = (
        HEAD
        + """
workload: {cap: CAP}
workflow:
  - step: start
    loop: {in: [1, 2, 3, 4, 5], iterator: x, spec: {mode: parallel, max_in_flight: "{{ cap }}"}}
    tool: {kind: noop}
"""
    )
    h = Harness(text.replace("CAP", "2"))
    h.start()
    assert len(h.pending) == 2
    state = Harness(text.replace("CAP", "'none'")).run()
    assert state.status == "FAILED" and "max_in_flight" in (state.error or "")
    state = Harness(text.replace("CAP", "0")).run()
    assert state.status == "FAILED" and "not a positive integer" in (state.error or "")


def test_the_root_spec_and_job_variables_are_visible_to_templates() -> None:
    h = Harness(
        HEAD
        + """
spec: {state: ready, job: "{{ job.uuid }}"}
workflow:
  - step: start
    tool: {kind: noop, result: "{{ spec.job }}/{{ job.execution_id }}"}
    next: [{step: end, when: "{{ spec.state == 'ready' }}"}]
  - {step: end, tool: {kind: noop, result: "{{ start }}"}}
""",
        execution_id=42,
    )
    state = h.run()
    assert state.status == "COMPLETED" and state.result == "42/42"


FAN = (
    HEAD
    + """
workflow:
  - step: start
    tool: {kind: noop}
    next: {spec: {mode: inclusive}, arcs: [{step: a}, {step: b}]}
  - step: a
    tool: {kind: noop}
    next:
      arcs:
        - {step: join, when: "{{ event.name == 'call.done' }}"}
        - {step: join, when: "{{ event.name == 'call.error' }}"}
  - step: b
    spec:
      policy:
        admit:
          rules: [{when: "{{ admit_b }}", then: {allow: true}}, {else: {then: {allow: false}}}]
    tool: {kind: noop}
    next: [join]
  - {step: join, tool: {kind: noop, result: joined}}
"""
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(a_fails=st.booleans(), admit_b=st.booleans(), order=st.randoms(use_true_random=False))
def test_routed_failures_and_admission_always_reach_the_join_once(
    a_fails: bool, admit_b: bool, order: Any
) -> None:
    """Whatever fails (routed) or is not admitted, and in any completion order, the join runs
    exactly once and the run completes; nothing is left pending."""
    h = Harness(FAN)
    h.start({"admit_b": admit_b})
    while h.pending:
        command = h.pending.pop(order.randrange(len(h.pending)))
        if command.step == "a" and a_fails:
            h.apply(CommandFailed(command.command_id, "boom"))
        else:
            h.apply(CommandCompleted(command.command_id, command.tool.get("result")))
    assert h.state.status == "COMPLETED" and h.state.result == "joined"
    assert h.kinds("join").count("step.enter") == 1
    assert ("step.enter" in h.kinds("b")) is admit_b


def test_workload_defaults_are_rendered_once_at_start_as_upstream_does() -> None:
    h = Harness(
        HEAD
        + """
workload:
  test_id: "save_{{ execution_id }}"
  job_id: "{{ job.uuid }}"
  user_id: "{{ payload.user_id }}"
  provider: "{{ env.QUANTUM_PROVIDER | default('simulator') }}"
  username: "{{ username | default('someone') }}"
  greeting: "hello {{ username }}"
  given: "{{ not_rendered }}"
workflow:
  - step: start
    tool: {kind: noop, result: "{{ workload }}"}
""",
        execution_id=5,
    )
    state = h.run(workload={"given": "{{ raw }}"})
    assert state.status == "COMPLETED"
    assert state.result == {
        "test_id": "save_5",
        "job_id": "5",
        "user_id": None,
        "provider": "simulator",
        "username": "someone",
        "greeting": "hello someone",
        "given": "{{ raw }}",
    }


def test_a_payload_value_wins_over_a_templated_default() -> None:
    h = Harness(
        HEAD
        + """
workload: {username: "{{ username | default('someone') }}", greeting: "hi {{ username }}"}
workflow:
  - {step: start, tool: {kind: noop, result: "{{ greeting }}"}}
"""
    )
    assert h.run(workload={"username": "ann"}).result == "hi ann"


OWN_RESULT = (
    HEAD
    + """
workload: {request_id: ""}
workflow:
  - step: start
    tool: {kind: noop, result: {error: "bad token"}}
    set: {ctx.seen: "{{ result.error }}"}
    next:
      arcs:
        - {step: callback, when: "{{ result.error is defined and request_id }}"}
        - {step: end, when: "{{ result.error is defined and not request_id }}"}
        - {step: session, when: "{{ result.sub is defined }}"}
  - {step: callback, tool: {kind: noop, result: callback}}
  - {step: session, tool: {kind: noop, result: session}}
  - step: end
    tool: {kind: noop, result: "{{ result }}"}
"""
)


def test_result_in_set_and_arcs_is_the_steps_own_result() -> None:
    """Upstream (auth0_login_optimized): an arc's `result` is the step's own result; in the
    next step's tool it is still the result of the step whose arc led there."""
    h = Harness(OWN_RESULT)
    state = h.run()
    assert state.status == "COMPLETED", state.error
    assert state.variables == {"seen": "bad token"}
    assert "step.enter" in h.kinds("end") and "step.enter" not in h.kinds("session")
    assert state.result == {"error": "bad token"}  # `end`'s tool: the upstream's result


NOW = (
    HEAD
    + """
workload:
  base: {test_id: "t_{{ execution_id }}", timestamp: "{{ now() }}"}
workflow:
  - step: start
    tool: {kind: python, code: "result = '{{ now() }}'"}
    set: {ctx.at: "{{ now('%Y-%m-%d') }}"}
"""
)


@settings(max_examples=25, deadline=None)
@given(st.datetimes(timezones=st.just(UTC)))
def test_now_in_the_engine_is_the_executions_start_time_and_replays(moment: Any) -> None:
    """The engine never reads a clock: `now()` in the workload, a tool it renders and a `set`
    is the start time the server recorded, so a replay of the log decides the same."""
    at = moment.isoformat()
    h = Harness(NOW)
    h.start(started_at=at)
    assert h.state.workload["base"] == {"test_id": "t_7", "timestamp": at}
    (command,) = h.pending
    assert command.tool["code"] == f"result = '{at}'"
    h.apply(CommandCompleted(command.command_id, "ok"))
    assert h.state.status == "COMPLETED"
    assert h.state.variables == {"at": moment.strftime("%Y-%m-%d")}
    assert h.state.to_json()["started_at"] == at


def test_now_without_a_recorded_start_time_fails_instead_of_reading_a_clock() -> None:
    h = Harness(NOW.replace('timestamp: "{{ now() }}"', "timestamp: 1"))
    h.start()
    assert h.state.status == "FAILED" and "no start time" in (h.state.error or "")


LOOP_FAILS = (
    HEAD
    + """
workflow:
  - step: start
    loop: {in: "{{ [0, 1, 2, 3] }}", iterator: x, spec: {mode: parallel}}
    tool: {kind: noop}
    next:
      arcs:
        - {step: handled, when: "{{ event.name == 'call.error' }}"}
        - {step: end}
  - {step: handled, tool: {kind: noop, result: handled}}
  - {step: end, tool: {kind: noop, result: end}}
"""
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(failing=st.sets(st.integers(0, 3), min_size=1), order=st.randoms(use_true_random=False))
def test_a_routed_iteration_failure_ends_a_parallel_loop_the_same_way_in_any_order(
    failing: set[int], order: Any
) -> None:
    """The failure is routed once every iteration in flight has finished: it used to be routed
    only when the failing iteration happened to finish last, and fail the run otherwise."""
    h = Harness(LOOP_FAILS)
    h.start()
    while h.pending:
        command = h.pending.pop(order.randrange(len(h.pending)))
        if command.step == "start" and command.iteration in failing:
            h.apply(CommandFailed(command.command_id, "boom"))
        else:
            h.apply(CommandCompleted(command.command_id, command.tool.get("result")))
    assert h.state.status == "COMPLETED" and h.state.result == "handled"
    assert h.kinds("start").count("command.cancelled") == 0
    assert "step.enter" not in h.kinds("end")


BY_STATUS = (
    HEAD
    + """
workflow:
  - step: start
    loop: {in: "{{ items }}", iterator: x, spec: {mode: parallel}}
    tool: {kind: http, url: "http://example.invalid/{{ x }}"}
    next:
      arcs:
        - step: missing
          when: "{{ event.name == 'call.error' and output.error.status == 404 }}"
          set: {ctx.kind: "{{ output.error.kind }}", ctx.again: "{{ output.error.retryable }}"}
        - step: later
          when: "{{ event.name == 'call.error' and output.error.retryable }}"
        - {step: end, when: "{{ event.name == 'loop.done' }}"}
  - {step: missing, tool: {kind: noop, result: missing}}
  - {step: later, tool: {kind: noop, result: later}}
  - {step: end, tool: {kind: noop, result: end}}
"""
)
NOT_FOUND = {"status": 404, "kind": "not_found", "retryable": False}
BUSY = {"status": 503, "kind": "server_error", "retryable": True}


def _by_status(items: list[int], info: dict[str, Any] | None) -> Harness:
    h = Harness(BY_STATUS.replace('"{{ items }}"', str(items)))
    h.start()
    while h.pending:
        command = h.pending.pop(0)
        if command.step == "start" and command.iteration == 0:
            h.apply(CommandFailed(command.command_id, "GET failed", info or {}))
        else:
            h.apply(CommandCompleted(command.command_id, command.tool.get("result")))
    return h


def test_call_error_arcs_read_the_error_fields_the_worker_reported() -> None:
    """`output.error` in a `call.error` arc is what policy rules see on the worker: status,
    kind and retryable, not the message alone (they were missing: no arc could route on an
    HTTP status)."""
    h = _by_status([0], NOT_FOUND)
    assert h.state.status == "COMPLETED" and h.state.result == "missing"
    assert h.state.variables == {"kind": "not_found", "again": False}
    assert _by_status([0], BUSY).state.result == "later"
    plain = _by_status([0], None)  # a failure with no fields: the defaults, nothing routes
    assert plain.state.status == "FAILED" and "GET failed" in (plain.state.error or "")


def test_a_parallel_loop_routes_its_first_failure_with_that_failures_fields() -> None:
    """The routing waits for the iterations in flight; the fields are the failure's."""
    h = _by_status([0, 1, 2], BUSY)
    assert h.state.status == "COMPLETED" and h.state.result == "later"
