"""Parsing and validation: every problem with its file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from noetl.dsl import parse_playbook
from noetl.dsl.source import load_yaml
from noetl.engine.steps import runs_on_worker
from noetl.errors import PlaybookError
from tests.conformance.known_failures import BROKEN_ON_PURPOSE, NOT_ACCEPTED_YET
from tests.conformance.manifest import PLAYBOOKS

CONFORMANCE = PLAYBOOKS
HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t}\n"


def _problems(text: str) -> list[str]:
    with pytest.raises(PlaybookError) as info:
        parse_playbook(text, "p.yaml")
    return [str(p) for p in info.value.problems]


def test_every_problem_is_listed_at_once_with_line_and_field() -> None:
    problems = _problems(
        HEAD
        + """workflow:
  - step: start
    tool: {kind: python, code: x}
    command: oops
    next: [{step: nowhere}]
  - step: other
"""
    )
    assert problems == [
        "p.yaml:7:5: workflow[0].command: unknown key 'command'; expected one of args, desc,"
        " description, input, loop, next, output, set, spec, step, tool",
        "p.yaml:8:13: workflow[0].next[0].step: unknown step 'nowhere'; steps are start, other",
    ]


def test_missing_header_fields_are_named() -> None:
    problems = _problems("kind: Other\nworkflow: []\n")
    assert any("apiVersion" in p for p in problems)
    assert any("kind: expected 'Playbook'" in p for p in problems)
    assert any("metadata.name: is required" in p for p in problems)
    assert any("workflow: expected a non-empty list" in p for p in problems)


def test_legacy_next_spellings_are_normalised() -> None:
    for spelling in ("next: end", "next: [end]", "next: [{step: end}]"):
        playbook = parse_playbook(
            HEAD
            + f"""workflow:
  - step: start
    tool: {{kind: noop}}
    {spelling}
  - {{step: end, tool: {{kind: noop}}}}
"""
        )
        assert playbook.step("start").targets == ("end",)
        assert playbook.step("start").next.mode == "exclusive"  # type: ignore[union-attr]


def test_args_is_the_legacy_spelling_of_input() -> None:
    playbook = parse_playbook(
        HEAD + "workflow:\n  - {step: start, args: {a: 1}, tool: {kind: noop}}\n"
    )
    assert playbook.step("start").input == {"a": 1}


def test_entry_is_start_else_the_first_step() -> None:
    text = (
        HEAD + "workflow:\n  - {step: first, tool: {kind: noop}, next: [start]}\n"
        "  - {step: start, tool: {kind: noop}}\n"
    )
    assert parse_playbook(text).entry == "start"
    assert parse_playbook(HEAD + "workflow:\n  - {step: one, tool: {kind: noop}}\n").entry == "one"


def test_duplicate_keys_and_step_names_are_errors() -> None:
    assert any("duplicate key" in p for p in _problems(HEAD + "workflow: []\nworkflow: []\n"))
    problems = _problems(
        HEAD + "workflow:\n  - {step: a, tool: {kind: noop}}\n  - {step: a, tool: {kind: noop}}\n"
    )
    assert any("duplicate step name 'a'" in p for p in problems)


def test_a_name_with_a_control_character_is_an_error_naming_its_line() -> None:
    # a NUL cannot be stored (the execution stayed RUNNING forever); a newline breaks listings
    for name in ('"a\\0b"', '"a\\nb"', '"\\x7f"'):
        problems = _problems(HEAD + f"workflow:\n  - step: {name}\n    tool: {{kind: noop}}\n")
        assert any("p.yaml:5:5: workflow[0].step: a name may not contain" in p for p in problems)
    problems = _problems(
        'apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: x, path: "p\\0"}\n'
        "workflow:\n  - {step: start, tool: {kind: noop}}\n"
    )
    assert any("metadata.path" in p and "control character" in p for p in problems), problems


def test_a_set_key_with_an_empty_part_is_an_error_naming_its_line() -> None:
    # `ctx.: 2` wrote a variable named '' (read by nothing), `a..b` a key '' inside `a`
    for key in ('"ctx."', '".a"', '"a..b"', '"iter."', '""'):
        problems = _problems(
            HEAD + f"workflow:\n  - step: start\n    set: {{{key}: 1}}\n    tool: {{kind: noop}}\n"
        )
        assert any("p.yaml:6" in p and "is not a variable name" in p for p in problems), problems
    rule = "spec: {policy: {rules: [{else: {then: {do: continue, set: {a..b: 1}}}}]}}"
    problems = _problems(HEAD + f"workflow:\n  - step: start\n    tool: {{kind: noop, {rule}}}\n")
    assert any("then.set.a..b" in p and "is not a variable name" in p for p in problems), problems
    assert parse_playbook(
        HEAD + "workflow:\n  - {step: start, set: {ctx.a.b: 1}, tool: {kind: noop}}\n"
    )


def test_python_code_is_not_treated_as_a_template() -> None:
    playbook = parse_playbook(
        HEAD + 'workflow:\n  - step: start\n    tool: {kind: python, code: "x = {{1: 2}}"}\n'
    )
    assert playbook.step("start").tool.config["code"] == "x = {{1: 2}}"


def _fixtures() -> list[Any]:
    """Every upstream fixture playbook; not-yet-accepted ones are strict xfail (the to-do)."""
    params = []
    for file in sorted(CONFORMANCE.rglob("*.yaml")) if CONFORMANCE.exists() else []:
        name = str(file.relative_to(CONFORMANCE))
        marks = []
        if name in NOT_ACCEPTED_YET:
            marks.append(pytest.mark.xfail(strict=True, reason=NOT_ACCEPTED_YET[name]))
        params.append(pytest.param(file, id=name, marks=marks))
    return params


@pytest.mark.parametrize("file", _fixtures())
def test_every_conformance_playbook_parses_except_the_broken_ones(file: Path) -> None:
    name = str(file.relative_to(CONFORMANCE))
    if name in BROKEN_ON_PURPOSE:
        with pytest.raises(PlaybookError, match=BROKEN_ON_PURPOSE[name]):
            parse_playbook(file.read_text(), name)
    else:
        parse_playbook(file.read_text(), name)


@pytest.mark.parametrize(
    "file", sorted(CONFORMANCE.rglob("*.yaml")) if CONFORMANCE.exists() else []
)
def test_the_json_schema_accepts_the_conformance_playbooks_the_parser_accepts(file: Path) -> None:
    import jsonschema
    import yaml

    from noetl.dsl.schema import playbook_schema

    validator = jsonschema.Draft202012Validator(playbook_schema())
    errors = list(validator.iter_errors(yaml.safe_load(file.read_text())))
    name = str(file.relative_to(CONFORMANCE))
    if "broken_playbooks" in file.parts:
        assert errors, file
    elif name not in BROKEN_ON_PURPOSE and name not in NOT_ACCEPTED_YET:
        assert errors == [], (file, [e.message for e in errors])


def test_the_json_schema_flags_unknown_keys() -> None:
    import jsonschema

    from noetl.dsl.schema import playbook_schema

    validator = jsonschema.Draft202012Validator(playbook_schema())
    broken = {
        "apiVersion": "noetl.io/v2",
        "kind": "Playbook",
        "metadata": {"name": "x"},
        "workflow": [{"step": "start", "tool": {"kind": "noop"}, "colour": "red"}],
    }
    assert any("colour" in e.message for e in validator.iter_errors(broken))


def test_a_sub_playbook_inside_a_pipeline_is_accepted_and_runs_on_the_worker() -> None:
    text = (
        HEAD
        + """workflow:
  - step: start
    tool:
      - {name: a, kind: noop}
      - {name: b, kind: playbook, path: other, timeout: 30, payload: {x: 1}}
"""
    )
    assert runs_on_worker(parse_playbook(text).step("start"))  # accepted
    [problem] = _problems(text.replace("timeout: 30", "timeout: [1]"))
    assert "tool[1].timeout: playbook field 'timeout' must be a number" in problem


def test_deep_yaml_is_refused_at_the_level_that_breaks_the_bound_before_the_rest_is_read() -> None:
    # 150 levels and a broken tail: the composer must stop at level 101, not read (and
    # recurse through) the whole document first and report the tail
    document = "[" * 150 + "]" * 149 + ","
    with pytest.raises(PlaybookError) as raised:
        load_yaml(document)
    problem = raised.value.problems[0]
    assert problem.message == "the document nests deeper than 100 levels"
    assert (problem.line, problem.column) == (1, 102)


def test_a_cursor_loop_needs_a_claim_and_a_known_frame_process() -> None:
    problems = _problems(
        HEAD
        + """workflow:
  - step: start
    loop:
      cursor: {kind: postgres, auth: pg}
      iterator: row
      spec: {mode: cursor, frame: {process: batch}}
    tool: {kind: noop}
"""
    )
    assert any("loop.cursor.claim: is required" in p for p in problems), problems
    assert any("spec.frame.process: expected row or frame" in p for p in problems), problems
    loop = (
        parse_playbook(
            HEAD
            + """workflow:
  - step: start
    loop:
      cursor: {claim: "SELECT 1"}
      iterator: row
      spec: {mode: cursor, frame: {max_rows: 5}}
    tool: {kind: noop}
"""
        )
        .step("start")
        .loop
    )
    assert loop is not None and loop.mode == "cursor" and loop.frame == {"max_rows": 5}


def test_max_in_flight_is_bounded() -> None:
    # one decision issues max_in_flight iterations at once: 10**6 wrote and published them all
    loop = "    loop: {in: '{{ 10 }}', iterator: i, spec: {mode: parallel, max_in_flight: 20000}}\n"
    problems = _problems(HEAD + "workflow:\n  - step: start\n" + loop + "    tool: {kind: noop}\n")
    assert any("max_in_flight: 20000 is over the limit of 10000" in p for p in problems), problems
