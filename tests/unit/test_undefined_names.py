"""Undefined names (DSL.md §2): falsy wherever they are only tested; an error, naming them,
wherever their value is used (rendered, iterated, compared, an attribute read)."""

from __future__ import annotations

from typing import Any

import pytest

from noetl.dsl.template import evaluate_condition, render
from noetl.errors import TemplateError
from tests.unit.engine_harness import Harness

HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t}\n"
CTX: dict[str, Any] = {"start": {"x": 1}, "ctx": {}, "b": {"who": "b"}, "n": 0}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ nosuch or 'dflt' }}", "dflt"),
        ("{{ 'y' if nosuch else 'n' }}", "n"),
        ("{% if nosuch %}y{% else %}n{% endif %}", "n"),
        ("{{ not nosuch }}", True),
        ("{{ (a or b).who }}", "b"),  # step `a` did not run on this path
        ("{{ start.nokey or 1 }}", 1),  # a field the result lacks
        ("{{ ctx.nokey or 4 }}", 4),
        ("{{ nosuch.x if nosuch else 'n' }}", "n"),
        ("{{ nosuch | default(3, true) }}", 3),  # `default`'s boolean mode tests it
        ("{{ 'at ' ~ (nosuch or 'home') }}", "at home"),
        ("{{ nosuch is defined and nosuch.x }}", False),
        ("{{ nosuch is not defined }}", True),
        ("{{ nosuch | default(2) }}", 2),
        ("{{ (nosuch or []) | length }}", 0),
        ("{% for i in nosuch or [] %}{{ i }}{% endfor %}-", "-"),
        ("{{ [nosuch or 1, {'k': start.nokey or 2}] }}", [1, {"k": 2}]),
    ],
)
def test_an_undefined_name_that_is_only_tested_is_falsy(source: str, expected: Any) -> None:
    assert render(source, CTX) == expected


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("{{ nosuch }}", "nosuch"),
        ("text {{ nosuch }}", "nosuch"),
        ("{{ nosuch ~ 'x' }}", "nosuch"),
        ("{{ nosuch.x }}", "nosuch"),
        ("{{ nosuch['x'] }}", "nosuch"),
        ("{{ nosuch == 1 }}", "nosuch"),  # a comparison is a use: a typo is caught
        ("{{ nosuch != 1 }}", "nosuch"),
        ("{{ nosuch > 1 }}", "nosuch"),
        ("{{ nosuch + 1 }}", "nosuch"),
        ("{{ nosuch | length }}", "nosuch"),  # `length` reads it, as iterating does
        ("{% for i in nosuch %}{{ i }}{% endfor %}", "nosuch"),
        ("{{ 1 in nosuch }}", "nosuch"),
        ("{{ nosuch and 1 }}", "nosuch"),  # `and` gives its undefined left side: rendered
        ("{{ start.nokey }}", "nokey"),
        ("{{ start.nokey.deeper }}", "nokey"),
        ("{{ (nosuch or other).x }}", "other"),
        ("{{ [nosuch] }}", "nosuch"),  # inside a list or mapping it still reaches the output
        ("{{ {'k': nosuch and 1} }}", "nosuch"),
        ("list {{ [1, nosuch] }}", "nosuch"),
        ("{{ [1, [start.nokey]] }}", "nokey"),
    ],
)
def test_an_undefined_value_that_is_used_is_an_error_naming_it(source: str, name: str) -> None:
    with pytest.raises(TemplateError, match=name):
        render(source, CTX)


def test_is_none_is_jinja_s_test_an_undefined_name_is_not_none() -> None:
    assert render("{{ nosuch is none }}", {}) is False
    assert render("{{ nosuch is not none }}", {}) is True


@pytest.mark.parametrize(
    "source",
    [
        "{{ nosuch or true }}",
        "{{ not nosuch }}",
        "{% if nosuch %}false{% else %}true{% endif %}",
        "{{ start.nokey is not defined }}",
    ],
)
def test_a_condition_that_only_tests_an_undefined_name_holds_without_a_problem(
    source: str,
) -> None:
    assert evaluate_condition(source, CTX) == (True, None)


@pytest.mark.parametrize(
    "source", ["{{ nosuch }}", "{{ nosuch == 1 }}", "{{ nosuch.x }}", "{{ n == 0 and nosuch }}"]
)
def test_a_condition_that_uses_an_undefined_value_is_false_with_a_problem(source: str) -> None:
    ok, problem = evaluate_condition(source, CTX)
    assert ok is False and problem is not None and "nosuch" in problem


# -- through the engine ----------------------------------------------------------------------


def test_tested_undefined_names_in_set_input_when_and_loop_through_the_engine() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop, result: {go: b}}
    set: {ctx.s1: "{{ nosuch or 'dflt' }}"}
    next:
      arcs:
        - {step: a, when: "{{ start.go == 'a' }}"}
        - {step: b, when: "{{ not nosuch }}"}
  - {step: a, tool: {kind: noop, result: {who: a}}, next: [join]}
  - {step: b, tool: {kind: noop, result: {who: b}}, next: [join]}
  - step: join
    tool: {kind: noop, result: "{{ (a or b).who }}"}
    next: [{step: each, when: "{% if nosuch %}false{% else %}true{% endif %}"}]
  - step: each
    loop: {in: "{{ nosuch or [] }}", iterator: item}
    tool: {kind: noop}
"""
    )
    state = h.run()
    assert state.status == "COMPLETED", state.error
    assert state.variables == {"s1": "dflt"}
    [join] = [e for e in h.events if e.event_type == "step.exit" and e.step == "join"]
    assert join.result == "b" and join.payload["next"] == ["each"]
    assert state.result["count"] == 0
    assert not [e for e in h.events if e.event_type == "step.exit" and "problems" in e.payload]


def test_an_undefined_value_in_a_tool_input_fails_the_step_naming_it() -> None:
    h = Harness(
        HEAD + "workflow:\n  - {step: start, tool: {kind: noop, result: {a: '{{ nosuch ~ 1 }}'}}}\n"
    )
    state = h.run()
    assert state.status == "FAILED"
    assert state.error is not None and "'start'" in state.error and "nosuch" in state.error


def test_an_undefined_name_in_an_arc_of_a_failed_step_is_recorded() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop}
    next: [{step: end, when: "{{ event.name == 'call.error' and nosuch }}"}]
  - {step: end, tool: {kind: noop}}
"""
    )
    state = h.run(lambda c: (False, "ValueError: bad"))
    assert state.status == "FAILED"
    [exit_event] = [e for e in h.events if e.event_type == "step.exit"]
    assert exit_event.status == "failed"
    assert "arc to end" in exit_event.payload["problems"][0]
    assert "nosuch" in exit_event.payload["problems"][0]


def test_an_undefined_name_in_an_arc_of_a_handled_failure_is_recorded() -> None:
    h = Harness(
        HEAD
        + """
workflow:
  - step: start
    tool: {kind: noop}
    next:
      arcs:
        - {step: a, when: "{{ event.name == 'call.error' and nosuch.x }}"}
        - {step: b, when: "{{ event.name == 'call.error' }}"}
  - {step: a, tool: {kind: noop, result: a}}
  - {step: b, tool: {kind: noop, result: b}}
"""
    )
    state = h.run(lambda c: (c.step != "start", c.tool.get("result")))
    assert state.status == "COMPLETED" and state.result == "b"
    [exit_event] = [e for e in h.events if e.event_type == "step.exit" and e.step == "start"]
    assert exit_event.payload["handled"] is True and exit_event.payload["next"] == ["b"]
    assert "nosuch" in exit_event.payload["problems"][0]
