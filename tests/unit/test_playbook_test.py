"""PlaybookTest files: parsing with named errors, mocks applied to the playbook, checks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from noetl.cli.playbook_test import BadTestFile, PlaybookTest, check, find, load, mocked
from noetl.dsl import parse_playbook

PLAYBOOK = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: p}
workflow:
  - step: start
    tool: {kind: python, code: "result = 1"}
    next: [end]
  - step: end
    tool: {kind: python, code: "result = 2"}
"""


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_file_holds_several_tests_and_folders_are_searched(tmp_path: Path) -> None:
    (tmp_path / "deep").mkdir()
    path = write(
        tmp_path / "deep",
        "kind: PlaybookTest\nplaybook: p.yaml\n---\n"
        "kind: PlaybookTest\nmetadata: {name: second}\nplaybook: p.yaml\n"
        "expect: {status: failed}\n",
    )
    write(tmp_path, PLAYBOOK, "p.yaml")
    assert find([tmp_path]) == [path]
    first, second = load(path)
    assert first.name == "t#1" and first.playbook == tmp_path / "deep" / "p.yaml"
    assert second.name == "second" and second.expect["status"] == "FAILED"


def test_register_names_files_and_folders_of_playbooks(tmp_path: Path) -> None:
    (tmp_path / "subs" / "deeper").mkdir(parents=True)
    one = write(tmp_path / "subs", PLAYBOOK, "one.yaml")
    two = write(tmp_path / "subs" / "deeper", PLAYBOOK, "two.yml")
    write(tmp_path / "subs", "kind: PlaybookTest\nplaybook: x\n", "not_a_playbook.yaml")
    path = write(
        tmp_path, "kind: PlaybookTest\nplaybook: p.yaml\nregister: [subs, subs/one.yaml]\n"
    )
    [test] = load(path)
    assert test.register == (two, one, one)  # each folder in path order
    [single] = load(
        write(tmp_path, "kind: PlaybookTest\nplaybook: p.yaml\nregister: subs/one.yaml\n", "s.yaml")
    )
    assert single.register == (one,)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Playbook\n", "kind: expected PlaybookTest"),
        ("kind: PlaybookTest\n", "playbook: the path"),
        ("kind: PlaybookTest\nplaybook: p\ncolour: red\n", "unknown key(s) colour"),
        ("kind: PlaybookTest\nplaybook: p\nmocks: {a: {}}\n", "mocks.a: give `result` or"),
        ("kind: PlaybookTest\nplaybook: p\nexpect: {status: DONE}\n", "expect.status"),
        ("kind: PlaybookTest\nplaybook: p\nexpect: {ran: a}\n", "expect.ran: expected a list"),
        ("kind: PlaybookTest\nplaybook: p\nexpect: {maybe: 1}\n", "expect: unknown key"),
        ("kind: PlaybookTest\nplaybook: p\nregister: {a: 1}\n", "register: expected a list"),
        ("kind: PlaybookTest\nplaybook: p\nregister: [gone.yaml]\n", "gone.yaml does not exist"),
        ("kind: PlaybookTest\nplaybook: p\nregister: [.]\n", "register: no playbook"),
        ("kind: [\n", "invalid YAML"),
        ("", "no test in the file"),
    ],
)
def test_bad_test_files_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(BadTestFile, match=re.escape(message)) as caught:
        load(path)
    assert str(path) in str(caught.value)


def test_mocks_replace_the_steps_tool_with_a_result_or_an_error() -> None:
    text = mocked(PLAYBOOK, {"start": {"result": {"x": 1}}, "end": {"error": "nope"}})
    steps = {s["step"]: s for s in yaml.safe_load(text)["workflow"]}
    assert steps["start"]["tool"] == {"kind": "noop", "result": {"x": 1}}
    assert steps["end"]["tool"]["kind"] == "python" and "ToolError" in steps["end"]["tool"]["code"]
    assert steps["start"]["next"] == ["end"]
    parse_playbook(text)  # still a valid playbook
    with pytest.raises(BadTestFile, match="no step named ghost"):
        mocked(PLAYBOOK, {"ghost": {"result": 1}})


def _test(**expect: object) -> PlaybookTest:
    return PlaybookTest(
        "t", Path("t.yaml"), Path("p.yaml"), expect={"status": "COMPLETED", **expect}
    )


EVENTS: list[Mapping[str, Any]] = [
    {"event_type": "step.exit", "step": "start", "result": {"a": 1, "b": {"c": 2, "d": 3}}},
    {"event_type": "step.skipped", "step": "cold", "result": None},
    {"event_type": "step.exit", "step": "end", "result": 5},
]
DONE = {"status": "COMPLETED", "result": {"total": 5, "extra": True}, "error": None}


def test_expectations_match_fields_and_name_what_differs() -> None:
    passing = _test(
        result={"total": 5},
        steps={"start": {"b": {"c": 2}}, "end": 5},
        ran=["start", "end"],
        skipped=["cold"],
        not_ran=["cleanup"],
    )
    assert check(passing, DONE, EVENTS) == []
    failing = _test(
        status="FAILED",
        result={"total": 6, "gone": 1},
        steps={"start": {"b": {"c": 9}}, "never": 1},
        ran=["cold"],
        skipped=["end"],
        not_ran=["end"],
        error="boom",
    )
    assert check(failing, DONE, EVENTS) == [
        "status COMPLETED, expected FAILED",
        "result.total: 5, expected 6",
        "result.gone: missing",
        "error None does not contain 'boom'",
        "steps.start.b.c: 2, expected 9",
        "steps.never: did not run",
        "ran: cold did not run",
        "skipped: end was not skipped",
        "not_ran: end ran",
    ]
