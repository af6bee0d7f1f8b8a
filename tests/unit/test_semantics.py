"""The language's rules, written once (noetl.dsl.semantics), and both sides agreeing on them."""

from __future__ import annotations

import asyncio
from typing import Any

from noetl.dsl import semantics
from noetl.engine import CommandCompleted
from noetl.worker.pipeline import run_pipeline
from tests.unit.engine_harness import Harness

HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t}\n"


def test_set_writes_dotted_keys_into_copies_and_leaves_the_old_map_alone() -> None:
    old = {"stats": {"a": 1, "deep": {"x": 1}}, "other": 5}
    assigned = semantics.assign(old, {"ctx.stats.deep.y": "{{ n }}", "total": 3}, {"n": 2})
    assert assigned.variables == {
        "stats": {"a": 1, "deep": {"x": 1, "y": 2}},
        "other": 5,
        "total": 3,
    }
    assert old == {"stats": {"a": 1, "deep": {"x": 1}}, "other": 5}
    assert set(assigned.changed) == {"stats", "total"} and assigned.problems == ()


def test_a_failing_set_value_is_skipped_and_named_while_the_others_apply() -> None:
    assigned = semantics.assign({}, {"good": "{{ 1 + 1 }}", "bad": "{{ nope.field }}"}, {})
    assert assigned.variables == {"good": 2}
    assert len(assigned.problems) == 1 and assigned.problems[0].startswith("set bad:")


def test_every_set_value_is_rendered_against_the_scope_before_any_is_written() -> None:
    assigned = semantics.assign({"a": 1}, {"a": 2, "b": "{{ a }}"}, {"a": 1})
    assert assigned.variables == {"a": 2, "b": 1}


def test_rescope_lets_later_templates_read_what_set_wrote() -> None:
    scope: dict[str, Any] = {"ctx": {}}
    semantics.rescope(scope, semantics.assign({}, {"ctx.x": 4}, scope))
    assert scope["x"] == 4 and scope["ctx"] == {"x": 4} and scope["vars"] == {"x": 4}


def test_tool_rendering_merges_the_tool_input_over_the_step_input() -> None:
    fields, tool_input = semantics.render_tool(
        {"kind": "python", "code": "x = 1", "url": "{{ u }}", "input": {"b": "{{ u }}"}},
        {"a": 1, "b": 0},
        {"u": "http://h"},
    )
    assert fields == {"code": "x = 1", "url": "http://h"}
    assert tool_input == {"a": 1, "b": "http://h"}


def test_jinja_in_python_code_is_rendered_leniently_and_other_braces_are_kept() -> None:
    """Upstream renders code before it runs (jinja_in_code); `{{1: 2}}` is not a template."""
    render = semantics.render_code
    assert render("n = {{ size }} * 2  # {{ missing }}", {"size": 3}) == "n = 3 * 2  # "
    assert render("x = {{1: 2}}", {}) == "x = {{1: 2}}"
    assert render("x = {'a': 1}", {}) == "x = {'a': 1}"


def test_code_that_reads_context_gets_the_names_it_quotes_from_the_template_context() -> None:
    code = "r = context['fetch'] if 'fetch' in context else context.get(\"other\", 0)"
    fields, _ = semantics.render_tool(
        {"code": code, "context": {"extra": "{{ u }}"}},
        {},
        {"fetch": {"rows": [1]}, "u": "x", "unrelated": 1},
    )
    assert fields["context"] == {"fetch": {"rows": [1]}, "extra": "x"}
    assert semantics.code_names(code) == {"fetch", "other"}
    assert semantics.code_names("print('no ctx')") == frozenset()


def test_set_on_iter_and_step_stays_local_and_never_becomes_an_execution_variable() -> None:
    scope = {"iter": {"page": 2}, "output": {"data": [1]}}
    assigned = semantics.assign(
        {"total": 1},
        {"iter.payload": "{{ output.data }}", "step.seen": True, "ctx.total": 2, "n": 3},
        scope,
    )
    assert assigned.variables == {"total": 2, "n": 3}
    assert set(assigned.changed) == {"total", "n"}
    assert assigned.local == {"iter": {"page": 2, "payload": [1]}, "step": {"seen": True}}
    assert scope["iter"] == {"page": 2}  # the caller's map is not changed in place
    semantics.rescope(scope, assigned)
    assert scope["iter"]["payload"] == [1] and scope["step"] == {"seen": True}


def test_the_outcome_has_upstreams_per_kind_views_and_http_error_fields() -> None:
    ok = semantics.succeeded({"status_code": 200, "headers": {"a": "b"}, "data": [1]}, "http")
    assert ok["http"] == {"status": 200, "headers": {"a": "b"}}
    assert ok["data"] == [1]  # the body, as upstream's output.data
    assert semantics.succeeded([1], "postgres")["pg"] == [1]
    assert semantics.succeeded(1, "python")["py"] == 1
    error = semantics.failed(
        "HTTP 503", retryable=True, kind="http", details={"status_code": 503, "headers": {}}
    )
    assert error["http"]["status"] == 503
    assert error["error"] == {
        "message": "HTTP 503",
        "retryable": True,
        "kind": "server_error",
        "status": 503,
    }
    assert semantics.failed("x", details={"status_code": 429})["error"]["kind"] == "rate_limit"
    assert semantics.failed("x")["error"]["kind"] == "error"


def test_the_first_matching_rule_wins_and_a_broken_when_is_a_problem_not_a_match() -> None:
    rules: list[dict[str, Any]] = [
        {"when": "{{ output.nope.deeper }}", "then": {"do": "jump", "to": "x"}},
        {"when": "{{ output.status == 'error' }}", "then": {"do": "retry"}},
        {"then": {"do": "continue"}},
    ]
    then, problems = semantics.rule_for(rules, semantics.failed("boom"), {})
    assert then == {"do": "retry"} and len(problems) == 1
    assert semantics.rule_for([], semantics.succeeded(1), {})[0] == {"do": "continue"}
    assert semantics.rule_for([], semantics.failed("x"), {})[0] == {"do": "fail"}


def test_retry_delays_follow_the_backoff_and_are_capped() -> None:
    assert semantics.retry_delay({"delay": 1, "backoff": "exponential"}, 3) == 4
    assert semantics.retry_delay({"delay": 1, "backoff": "linear"}, 3) == 3
    assert semantics.retry_delay({"delay": 2}, 5) == 2
    assert semantics.retry_delay({"delay": 100, "backoff": "exponential"}, 9) == 300


def _worker(command: Any, answer: Any) -> Any:
    """Run a pipeline command the engine issued as the worker would, with a fake tool."""

    async def call(kind: str, config: dict[str, Any], tool_input: dict[str, Any], item: str) -> Any:
        return answer

    return asyncio.run(run_pipeline(command.tool["items"], command.input, call))


def test_a_pipeline_set_into_a_nested_variable_keeps_its_siblings() -> None:
    # regression: the worker started from an empty map when the step did not read `ctx`, and
    # the server's top-level merge then dropped `stats.a`
    h = Harness(
        HEAD
        + """
workflow:
  - {step: start, tool: {kind: noop, result: 1}, set: {stats.a: 1}, next: [count]}
  - step: count
    tool: {kind: noop, result: 2, set: {stats.b: "{{ output.data }}"}}
"""
    )
    h.start()
    h.apply(CommandCompleted(h.pending.pop(0).command_id, 1))
    command = h.pending.pop(0)
    assert command.tool["kind"] == "pipeline"
    run = _worker(command, 2)
    h.apply(CommandCompleted(command.command_id, run.data, run.variables, tuple(run.problems)))
    assert h.state.variables["stats"] == {"a": 1, "b": 2}


def test_a_set_problem_on_the_worker_is_recorded_in_the_step_exit_like_one_on_the_server() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop, result: 1, set: {x: "{{ missing.field }}", y: 2}}
    set: {z: "{{ also_missing.field }}"}
"""
    )
    h.start()
    command = h.pending.pop(0)
    run = _worker(command, 1)
    assert run.ok and run.variables == {"y": 2}
    h.apply(CommandCompleted(command.command_id, run.data, run.variables, tuple(run.problems)))
    [exit_event] = [e for e in h.events if e.event_type == "step.exit"]
    problems = exit_event.payload["problems"]
    assert [p.split(":")[0] for p in problems] == ["set x", "set z"]
    assert h.state.variables == {"y": 2}


def test_the_fields_of_a_mapping_result_are_fields_of_output_and_the_envelope_wins() -> None:
    # regression: upstream fixtures keep `set: {x: "{{ output }}"}` and read `x['count']` in
    # python code (no template lookup there): KeyError 'count' / 'items' / 'page'
    out = semantics.succeeded({"count": 5, "status": "passed", "data": [1], "error": "e"})
    assert out["count"] == 5
    assert out["status"] == "ok" and out["error"] is None  # policy rules read these
    assert out["data"] == {"count": 5, "status": "passed", "data": [1], "error": "e"}
    http = semantics.succeeded(
        {"status_code": 200, "headers": {}, "data": {"data": [1], "paging": {"page": 2}}}, "http"
    )
    assert http["paging"] == {"page": 2} and http["data"] == {"data": [1], "paging": {"page": 2}}
    assert http["http"]["status"] == 200
    assert semantics.succeeded([1, 2])["data"] == [1, 2]  # a list has no fields to lift


def test_a_pipeline_result_carries_each_items_data_by_label_when_the_playbook_reads_it() -> None:
    # regression: `{{ fetch_page.results.check_pagination.has_more }}` (upstream's task
    # sequence result `results`) was undefined, so neither arc fired and the run stopped
    text = (
        HEAD
        + """
workflow:
  - step: start
    tool:
      - {name: fetch, kind: noop, result: 1}
      - {name: check, kind: noop, result: 2}
    next:
      arcs:
        - {step: end, when: "{{ start.results.check.more == true }}"}
  - {step: end, tool: {kind: noop, result: done}}
"""
    )
    h = Harness(text)
    h.start()
    command = h.pending.pop(0)
    assert command.tool["results"] is True
    answers = iter([{"page": 1}, {"more": True}])

    async def call(kind: str, config: dict[str, Any], tool_input: dict[str, Any], item: str) -> Any:
        return next(answers)

    run = asyncio.run(run_pipeline(command.tool["items"], command.input, call, None, True))
    assert run.data == {"more": True, "results": {"fetch": {"page": 1}, "check": {"more": True}}}
    h.apply(CommandCompleted(command.command_id, run.data))
    assert [c.step for c in h.pending] == ["end"]
    plain = Harness(text.replace("start.results.check.more", "start.more"))
    plain.start()
    assert "results" not in plain.pending[0].tool  # nobody reads it: the result stays small
    assert semantics.with_item_results([1], {"a": 1}) == [1]
    assert semantics.with_item_results({"results": 0}, {"a": 1}) == {"results": 0}


def test_templates_see_the_execution_id_as_text_as_upstream_passes_it() -> None:
    # regression: upstream's transform code slices it (`execution_id[:8]`): TypeError on an int
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop, result: "{{ execution_id[:2] }}|{{ job.execution_id }}|{{ job.uuid }}"}
""",
        execution_id=4242,
    )
    assert h.run().result == "42|4242|4242"
    assert semantics.execution_names(7) == {
        "execution_id": "7",
        "job": {"uuid": "7", "execution_id": "7"},
    }
