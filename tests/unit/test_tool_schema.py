"""Registration knows the tools: kinds (local and cloud-only), field types, keychain entries
and `output` blocks; a problem names its field, line and column."""

from __future__ import annotations

import pytest

from noetl.dsl import parse_playbook
from noetl.dsl.tool_schema import UNAVAILABLE
from noetl.errors import PlaybookError

HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: p}\n"


def _problems(text: str) -> list[str]:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text, "p.yaml")
    return [str(problem) for problem in caught.value.problems]


def _step(tool: str, extra: str = "") -> str:
    return HEAD + f"workflow:\n  - step: start\n    tool: {tool}\n{extra}"


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        ("{kind: http, url: 5}", "tool.url: http field 'url' must be a string, got a number (5)"),
        ("{kind: http, url: x, headers: [a]}", "http field 'headers' must be a mapping"),
        ("{kind: postgres, query: {a: 1}}", "postgres field 'query' must be a string"),
        ("{kind: duckdb, commands: 3}", "duckdb field 'commands' must be a string or a list"),
        ("{kind: python, code: x, args: [1]}", "python field 'args' must be a mapping"),
        ("{kind: nats, operation: explode}", "nats operation must be one of"),
        ("{kind: shell, command: x, timeout_seconds: soon}", "must be a number"),
        ("{kind: http, url: x, verify_ssl: maybe}", "'verify_ssl' must be a boolean"),
    ],
)
def test_a_field_of_the_wrong_type_is_an_error_naming_the_field(tool: str, message: str) -> None:
    problems = _problems(_step(tool))
    assert len(problems) == 1
    assert problems[0].startswith("p.yaml:6:")
    assert message in problems[0]


def test_templates_and_unknown_fields_pass() -> None:
    playbook = parse_playbook(
        _step('{kind: http, url: "{{ u }}", timeout: "{{ t }}", anything: [1, 2]}'),
        "p.yaml",
    )
    assert playbook.step("start").tool.config["anything"] == [1, 2]


@pytest.mark.parametrize("kind", sorted(UNAVAILABLE))
def test_a_cloud_only_kind_is_accepted_at_registration(kind: str) -> None:
    playbook = parse_playbook(_step(f"{{kind: {kind}, anything: x}}"), "p.yaml")
    assert playbook.step("start").tool.kind == kind


def test_unknown_kind_lists_the_known_ones() -> None:
    (problem,) = _problems(_step("{kind: fortran}"))
    assert "workflow[0].tool.kind: expected one of" in problem
    assert "nats" in problem and "snowflake" in problem


def test_keychain_entries_of_every_kind_register() -> None:
    text = (
        HEAD
        + """keychain:
  - {name: a, kind: static, scope: global, map: {x: "{{ y }}"}}
  - {name: b, kind: bearer, token: t}
  - {name: c, kind: credential, credential: pg}
  - {name: d, kind: secrets, provider: gcp, auth: g, map: {k: path}}
  - {name: e, kind: oauth2, auto_renew: true, endpoint: "http://x/token", data: {a: b}}
  - {name: f, kind: google_id_token, target_audience: aud, service_account_credential: sa}
  - {name: g, type: google_oauth, ref: google_oauth}
  - {name: h, credential: legacy}
workflow:
  - step: start
    tool: {kind: noop}
"""
    )
    playbook = parse_playbook(text, "p.yaml")
    assert [entry["name"] for entry in playbook.keychain] == list("abcdefgh")
    assert playbook.keychain[4]["endpoint"] == "http://x/token"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: a, kind: magic}", "keychain[0].kind: expected one of"),
        ("{name: a, kind: bearer}", "keychain[0].token: is required for a bearer keychain entry"),
        ("{name: a, kind: static, map: [1]}", "keychain[0].map: must be a mapping"),
        ("{name: a, kind: static, map: {}, scope: galaxy}", "keychain[0].scope: expected one of"),
        ("{name: a, kind: oauth2, endpoint: e, auto_renew: 3}", "auto_renew: must be a boolean"),
        ("{name: a}", "keychain[0].kind: is required"),
        ("{kind: static, map: {}}", "keychain[0].name: is required"),
    ],
)
def test_a_bad_keychain_entry_is_an_error(entry: str, message: str) -> None:
    problems = _problems(
        HEAD + f"keychain:\n  - {entry}\nworkflow:\n  - step: s\n    tool: {{kind: noop}}\n"
    )
    assert any(message in problem for problem in problems), problems


def test_output_blocks_on_steps_and_tools() -> None:
    text = _step(
        "{kind: postgres, query: q, output: {store: {kind: kv}, inline_max_bytes: 0}}",
        "    output: {store: {kind: auto}, output_select: [status, count]}\n",
    )
    step = parse_playbook(text, "p.yaml").step("start")
    assert step.output == {"store": {"kind": "auto"}, "output_select": ["status", "count"]}
    problems = _problems(
        _step("{kind: noop}", "    output: {select: status, store: {kind: tape}, x: 1}\n")
    )
    assert any("output.select: must be a list of field names" in p for p in problems)
    assert any("output.store.kind: expected one of" in p for p in problems)
    assert any("output.x: unknown key 'x'" in p for p in problems)


@pytest.mark.parametrize("kind", sorted(UNAVAILABLE))
async def test_a_cloud_only_kind_fails_at_run_time_naming_kind_and_service(kind: str) -> None:
    from noetl.tools import ToolCall, ToolError, get_tool

    with pytest.raises(ToolError) as caught:
        await get_tool(kind).run(ToolCall(kind, {"auth": "sf_test"}, {}, 1, "step"))
    message = str(caught.value)
    assert f"tool kind {kind!r} needs {UNAVAILABLE[kind]} (auth 'sf_test')" in message
    assert "not available" in message
