"""Pipelines on the worker: items in order, `set` between them, policies decide."""

from __future__ import annotations

from typing import Any

from noetl.tools.base import ToolError
from noetl.worker.pipeline import run_pipeline


class Tools:
    """Answers tool calls from a script: per label, a list of outcomes consumed in order."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = script
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(
        self, kind: str, config: dict[str, Any], tool_input: dict[str, Any], item: str
    ) -> Any:
        label = config["label"]
        assert item == label  # the runner is told which item it runs
        self.calls.append((label, tool_input))
        outcome = self.script[label].pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def item(label: str, **extra: Any) -> dict[str, Any]:
    config = {"label": label, **extra.pop("config", {})}
    return {"label": label, "kind": "noop", "config": config, "set": {}, "policy": [], **extra}


async def test_items_run_in_order_and_set_feeds_the_next_item() -> None:
    tools = Tools({"a": [{"id": 7}], "b": ["saved"]})
    items = [
        item("a", set={"generated": "{{ output }}"}),
        item("b", config={"input": {"record": "{{ generated.data.id }}", "who": "{{ name }}"}}),
    ]
    run = await run_pipeline(items, {"context": {"name": "x"}}, tools)
    assert run.ok and run.data == "saved"
    assert tools.calls[1] == ("b", {"record": 7, "who": "x"})
    assert run.variables == {
        "generated": {
            "id": 7,  # the data's fields are the envelope's too (upstream reads `x['id']`)
            "status": "ok",
            "data": {"id": 7},
            "error": None,
            "response": {"id": 7},
        }
    }


async def test_an_error_without_rules_fails_the_step() -> None:
    tools = Tools({"a": [ToolError("boom")], "b": ["never"]})
    run = await run_pipeline([item("a"), item("b")], {}, tools)
    assert not run.ok and run.error == "boom"
    assert [c[0] for c in tools.calls] == ["a"]


async def test_a_failed_pipeline_carries_its_failed_calls_error_fields() -> None:
    """The worker reports them with the failure: the server's `call.error` arcs read them."""
    unavailable = {"status_code": 503, "headers": {}, "data": "busy"}
    tools = Tools({"a": [ToolError("GET 503", retryable=True, details=unavailable)]})
    run = await run_pipeline([item("a", kind="http")], {}, tools)
    assert not run.ok and run.error == "GET 503"
    assert run.error_fields == {"retryable": True, "kind": "server_error", "status": 503}
    by_policy = Tools({"a": [{"ok": 1}]})
    rules = [{"when": "{{ output.status == 'ok' }}", "then": {"do": "fail"}}]
    failed = await run_pipeline([item("a", policy=rules)], {}, by_policy)
    assert not failed.ok and failed.error == "failed by policy" and failed.error_fields == {}


async def test_retry_runs_the_item_again_until_it_succeeds() -> None:
    tools = Tools({"a": [ToolError("flaky"), ToolError("flaky"), {"ok": 1}]})
    rules = [
        {
            "when": "{{ output.status == 'error' }}",
            "then": {"do": "retry", "attempts": 3, "delay": 0.001, "backoff": "exponential"},
        }
    ]
    run = await run_pipeline([item("a", policy=rules)], {}, tools)
    assert run.ok and run.data == {"ok": 1}
    assert len(tools.calls) == 3


async def test_retry_that_runs_out_of_attempts_fails_with_the_last_error() -> None:
    tools = Tools({"a": [ToolError("1"), ToolError("2")]})
    rules = [
        {
            "when": "{{ output.status == 'error' }}",
            "then": {"do": "retry", "attempts": 2, "delay": 0},
        }
    ]
    run = await run_pipeline([item("a", policy=rules)], {}, tools)
    assert not run.ok and run.error == "2"


async def test_continue_handles_an_error_and_else_always_matches() -> None:
    tools = Tools({"a": [ToolError("ignored")], "b": ["done"]})
    rules = [
        {
            "when": None,
            "then": {"do": "continue", "set": {"ctx.seen": "{{ output.error.message }}"}},
        }
    ]
    run = await run_pipeline([item("a", policy=rules), item("b")], {}, tools)
    assert run.ok and run.data == "done"
    assert run.variables == {"seen": "ignored"}


async def test_jump_and_break_steer_the_pipeline() -> None:
    tools = Tools({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    loop_back = [
        {
            "when": "{{ ctx.n | default(0) < 2 }}",
            "then": {"do": "jump", "to": "a", "set": {"ctx.n": "{{ ctx.n | default(0) + 1 }}"}},
        },
        {"when": None, "then": {"do": "break"}},
    ]
    run = await run_pipeline([item("a"), item("b", policy=loop_back), item("c")], {}, tools)
    assert run.ok and run.data == "z"
    assert [c[0] for c in tools.calls] == ["a", "b", "a", "b", "a", "b"]


async def test_fail_rule_fails_even_a_success() -> None:
    tools = Tools({"a": [{"rows": 0}]})
    rules = [{"when": "{{ output.data.rows == 0 }}", "then": {"do": "fail"}}]
    run = await run_pipeline([item("a", policy=rules)], {}, tools)
    assert not run.ok and run.error == "failed by policy"


async def test_a_template_error_in_an_item_fails_the_step_naming_it() -> None:
    tools = Tools({})
    run = await run_pipeline([item("a", config={"input": {"x": "{{ nope }}"}})], {}, tools)
    assert not run.ok and "template error in a" in (run.error or "") and "nope" in (run.error or "")


async def test_iter_set_stays_in_the_iteration_and_prev_and_attempt_are_visible() -> None:
    """Regression (issue 9): `iter.x` used to become an execution variable `x`, unreadable
    as `iter.x` by the next item."""
    error = ToolError("HTTP 503", retryable=True)
    error.details = {"status_code": 503, "headers": {}}  # what the http tool attaches
    tools = Tools({"fetch": [error, {"rows": [1, 2]}], "save": ["ok"]})
    retry = {
        "when": "{{ output.http.status == 503 and output.error.kind == 'server_error' }}",
        "then": {"do": "retry", "attempts": 2, "delay": 0},
    }
    keep = {"when": None, "then": {"do": "continue", "set": {"iter.payload": "{{ output.data }}"}}}
    items = [
        item("fetch", policy=[retry, keep]),
        item(
            "save",
            config={
                "input": {
                    "payload": "{{ iter.payload.rows }}",
                    "page": "{{ iter.page }}",
                    "prev": "{{ _prev }}",
                    "attempt": "{{ _attempt }}",
                    "previous": "{{ output.data }}",
                }
            },
        ),
    ]
    run = await run_pipeline(items, {"context": {"iter": {"page": 3}}}, tools)
    assert run.ok, run.error
    assert tools.calls[-1] == (
        "save",
        {
            "payload": [1, 2],
            "page": 3,
            "prev": {"rows": [1, 2]},
            "attempt": 1,
            "previous": {"rows": [1, 2]},
        },
    )
    assert run.variables == {}  # nothing execution-wide was written
