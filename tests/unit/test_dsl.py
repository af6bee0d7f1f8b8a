"""Parsing and validation: every problem with its file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from noetl.dsl import parse_playbook
from noetl.errors import PlaybookError

CONFORMANCE = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "playbooks"
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
        " description, input, loop, next, set, step, tool",
        "p.yaml:9:5: workflow[1].tool: is required (use `kind: noop` for a routing-only step)",
        "p.yaml:8:13: workflow[0].next[0].step: unknown step 'nowhere'; steps are start",
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


def test_python_code_is_not_treated_as_a_template() -> None:
    playbook = parse_playbook(
        HEAD + 'workflow:\n  - step: start\n    tool: {kind: python, code: "x = {{1: 2}}"}\n'
    )
    assert playbook.step("start").tool.config["code"] == "x = {{1: 2}}"


@pytest.mark.skipif(not CONFORMANCE.exists(), reason="shared conformance playbooks not present")
def test_every_conformance_playbook_parses_except_the_broken_one() -> None:
    for file in sorted(CONFORMANCE.rglob("*.yaml")):
        if "broken_playbooks" in file.parts:
            with pytest.raises(PlaybookError, match="command"):
                parse_playbook(file.read_text(), str(file))
        else:
            parse_playbook(file.read_text(), str(file))


@pytest.mark.skipif(not CONFORMANCE.exists(), reason="shared conformance playbooks not present")
def test_the_json_schema_accepts_the_conformance_playbooks_and_flags_unknown_keys() -> None:
    import jsonschema
    import yaml

    from noetl.dsl.schema import playbook_schema

    validator = jsonschema.Draft202012Validator(playbook_schema())
    for file in sorted(CONFORMANCE.rglob("*.yaml")):
        errors = list(validator.iter_errors(yaml.safe_load(file.read_text())))
        if "broken_playbooks" in file.parts:
            assert errors, file
        else:
            assert errors == [], (file, [e.message for e in errors])
    broken = {
        "apiVersion": "noetl.io/v2",
        "kind": "Playbook",
        "metadata": {"name": "x"},
        "workflow": [{"step": "start", "tool": {"kind": "noop"}, "colour": "red"}],
    }
    assert any("colour" in e.message for e in validator.iter_errors(broken))


def test_a_sub_playbook_inside_a_pipeline_is_rejected_with_the_reason() -> None:
    problems = _problems(
        HEAD
        + """workflow:
  - step: start
    tool:
      - {name: a, kind: noop}
      - {name: b, kind: playbook, path: other}
"""
    )
    assert any("must be the step's only tool" in p and "workflow[0].tool" in p for p in problems)
