"""Run a pipeline command: tool items in order on this worker, policies and `set` between them.

Each item is rendered just before it runs, against the context the server sent plus what the
items before it `set`. Its outcome is an envelope `output = {status, data, error}`; the item's
`spec.policy.rules` (first match wins, `else` always matches) decide what happens next:

    continue  go on with the next item (an error is then handled, not fatal)
    retry     run the item again: `attempts` tries in all, `delay` s, `backoff`
              none|fixed|linear|exponential; when tries run out an error fails the step
    jump      go to the item labelled `to`
    break     end the pipeline successfully with this item's output
    fail      fail the step with this item's error

Without rules an error fails the step and a success continues. The step's result is the data of
the last item that ran; the variables set along the way go back to the server with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from noetl.dsl.parse import UNRENDERED
from noetl.dsl.template import evaluate_condition, plain, render
from noetl.errors import TemplateError
from noetl.tools.base import ToolError

log = logging.getLogger(__name__)

CallTool = Callable[[str, dict[str, Any], dict[str, Any]], Awaitable[Any]]
MAX_JUMPS = 1000
MAX_DELAY = 300.0


@dataclass
class PipelineResult:
    ok: bool
    data: Any = None
    error: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)


def envelope(ok: bool, data: Any = None, error: ToolError | str | None = None) -> dict[str, Any]:
    if ok:
        return {"status": "ok", "data": data, "error": None, "response": data}
    message = str(error)
    retryable = isinstance(error, ToolError) and error.retryable
    return {
        "status": "error",
        "data": None,
        "error": {"message": message, "retryable": retryable},
        "response": None,
    }


class _Run:
    def __init__(
        self, payload: Mapping[str, Any], call: CallTool, keychain: Mapping[str, Any]
    ) -> None:
        self.ctx: dict[str, Any] = dict(payload.get("context") or {})
        if keychain:
            self.ctx["keychain"] = dict(keychain)
        self.ctx["ctx"] = dict(self.ctx.get("ctx") or {})
        self.step_input: dict[str, Any] = dict(payload.get("step") or {})
        self.call = call
        self.variables: dict[str, Any] = {}

    async def attempt(self, item: Mapping[str, Any]) -> dict[str, Any]:
        config = dict(item["config"])
        try:
            raw_input = {**self.step_input, **(config.pop("input", None) or {})}
            rendered = {k: v if k in UNRENDERED else render(v, self.ctx) for k, v in config.items()}
            tool_input = plain(render(raw_input, self.ctx))
        except TemplateError as exc:
            return envelope(False, error=f"template error in {item['label']}: {exc}")
        try:
            return envelope(True, await self.call(item["kind"], plain(rendered), tool_input))
        except ToolError as exc:
            return envelope(False, error=exc)

    def rule_for(self, item: Mapping[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        scope = {**self.ctx, "output": output}
        for rule in item.get("policy") or []:
            matched, _ = evaluate_condition(rule.get("when"), scope)
            if matched:
                then = rule.get("then") or {}
                return dict(then) if isinstance(then, Mapping) else {}
        return {"do": "continue" if output["status"] == "ok" else "fail"}

    def apply_set(self, assignments: Mapping[str, Any] | None, output: dict[str, Any]) -> None:
        if not assignments:
            return
        scope = {**self.ctx, "output": output}
        for key, template in assignments.items():
            try:
                value = plain(render(template, scope))
            except TemplateError as exc:
                log.warning("set %s: %s", key, exc)
                continue
            parts = key.split(".")
            if parts[0] in {"ctx", "iter", "step", "vars"} and len(parts) > 1:
                parts = parts[1:]
            top = self.ctx["ctx"].get(parts[0]) if len(parts) > 1 else None
            target: dict[str, Any] = {parts[0]: dict(top) if isinstance(top, dict) else {}}
            node = target
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
            self.ctx["ctx"][parts[0]] = target[parts[0]]
            self.ctx[parts[0]] = target[parts[0]]
            self.variables[parts[0]] = target[parts[0]]

    async def item(self, item: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run one item with its retries; returns its last output and the rule that decided."""
        tries = 1
        while True:
            output = await self.attempt(item)
            then = self.rule_for(item, output)
            self.apply_set(then.get("set"), output)
            if then.get("do") != "retry":
                return output, then
            attempts = int(then.get("attempts", 3))
            if tries >= attempts:
                done = "continue" if output["status"] == "ok" else "fail"
                return output, {**then, "do": done}
            delay = _delay(then, tries)
            log.info(
                "retrying %s (try %d of %d) in %.2f s", item["label"], tries + 1, attempts, delay
            )
            await asyncio.sleep(delay)
            tries += 1


async def run_pipeline(
    items: Sequence[Mapping[str, Any]],
    payload: Mapping[str, Any],
    call: CallTool,
    keychain: Mapping[str, Any] | None = None,
) -> PipelineResult:
    """`keychain`: the data of the playbook's keychain credentials, by keychain name."""
    run = _Run(payload, call, keychain or {})
    labels = {str(item["label"]): index for index, item in enumerate(items)}
    index, jumps, last = 0, 0, envelope(True)
    while index < len(items):
        item = items[index]
        output, then = await run.item(item)
        action = then.get("do", "continue")
        if action == "fail":
            error = output["error"]["message"] if output["error"] else "failed by policy"
            return PipelineResult(False, error=error, variables=run.variables)
        last = output
        run.apply_set(item.get("set"), output)
        run.ctx[str(item["label"])] = output["data"]
        if action == "break":
            break
        if action == "jump":
            target = str(then.get("to") or then.get("label") or then.get("step") or "")
            jumps += 1
            if target not in labels:
                return PipelineResult(False, error=f"jump to unknown item {target!r}")
            if jumps > MAX_JUMPS:
                return PipelineResult(False, error=f"more than {MAX_JUMPS} jumps: a loop?")
            index = labels[target]
            continue
        index += 1
    return PipelineResult(True, data=last["data"], variables=run.variables)


def _delay(then: Mapping[str, Any], tries: int) -> float:
    base = float(then.get("delay", 1.0))
    backoff = str(then.get("backoff", "fixed"))
    factor = {"linear": tries, "exponential": 2 ** (tries - 1)}.get(backoff, 1)
    return float(min(base * factor, MAX_DELAY))
