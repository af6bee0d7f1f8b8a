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
the last item that ran; the variables set along the way go back to the server with it, and so
do the problems of `set` values that could not be rendered. What each rule means (`set`, the
envelope, rule matching, retry delays) is written once in `noetl.dsl.semantics`; this module
only walks the items.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from noetl.dsl import semantics
from noetl.errors import TemplateError
from noetl.protocol.outcome import Retry
from noetl.tools import output as command_output
from noetl.tools.base import ToolError

log = logging.getLogger(__name__)

CallTool = Callable[[str, dict[str, Any], dict[str, Any], str], Awaitable[Any]]  # + item label
MAX_JUMPS = 1000


@dataclass
class PipelineResult:
    ok: bool
    data: Any = None
    error: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)  # top-level names `set` wrote
    problems: list[str] = field(default_factory=list)
    error_fields: dict[str, Any] = field(default_factory=dict)  # the failed call's


def failed_call(exc: ToolError, kind: str) -> dict[str, Any]:
    """`output` of a call of a `kind` tool that raised `exc`."""
    details = getattr(exc, "details", None)
    return semantics.failed(str(exc), retryable=exc.retryable, kind=kind, details=details or None)


class _Run:
    def __init__(
        self, payload: Mapping[str, Any], call: CallTool, keychain: Mapping[str, Any]
    ) -> None:
        self.ctx: dict[str, Any] = dict(payload.get("context") or {})
        if keychain:
            self.ctx["keychain"] = dict(keychain)
        self.variables: dict[str, Any] = {
            **(self.ctx.get("ctx") or {}),
            **(payload.get("variables") or {}),
        }
        self.ctx["ctx"] = self.ctx["vars"] = self.variables
        self.step_input: dict[str, Any] = dict(payload.get("step") or {})
        self.call = call
        self.changed: dict[str, None] = {}
        self.raw: Any = None  # what the last tool call returned (its `output.data` may be part)
        self.problems: list[str] = []

    def result(
        self,
        ok: bool,
        data: Any = None,
        error: str | None = None,
        output: Mapping[str, Any] | None = None,
    ) -> PipelineResult:
        """`output`: the failed call's, whose `output.error` fields go with the failure."""
        written = {name: self.variables[name] for name in self.changed}
        fields = semantics.error_fields(output) if output is not None else {}
        return PipelineResult(ok, data, error, written, self.problems, fields)

    async def attempt(self, item: Mapping[str, Any]) -> dict[str, Any]:
        try:
            fields, tool_input = semantics.render_tool(item["config"], self.step_input, self.ctx)
        except TemplateError as exc:
            return semantics.failed(f"template error in {item['label']}: {exc}")
        kind = str(item["kind"])
        self.raw = None
        try:
            self.raw = await self.call(kind, fields, tool_input, str(item["label"]))
            return semantics.succeeded(self.raw, kind)
        except ToolError as exc:
            return failed_call(exc, kind)

    def rule_for(self, item: Mapping[str, Any], output: dict[str, Any]) -> dict[str, Any]:
        then, problems = semantics.rule_for(item.get("policy") or [], output, self.ctx)
        self.problems += [f"{item['label']}: {p}" for p in problems]
        return then

    def apply_set(self, assignments: Mapping[str, Any] | None, output: dict[str, Any]) -> None:
        if not assignments:
            return
        assigned = semantics.assign(self.variables, assignments, {**self.ctx, "output": output})
        self.variables = assigned.variables
        semantics.rescope(self.ctx, assigned)
        self.changed.update(dict.fromkeys(assigned.changed))
        self.problems += list(assigned.problems)

    async def item(self, item: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run one item with its retries; returns its last output and the rule that decided."""
        tries = 1
        while True:
            self.ctx["_attempt"] = tries  # upstream: the try number of the current item
            output = await self.attempt(item)
            then = self.rule_for(item, output)
            self.apply_set(then.get("set"), output)
            if then.get("do") != "retry":
                return output, then
            attempts = int(then.get("attempts", 3))
            if tries >= attempts:
                done = "continue" if semantics.is_ok(output) else "fail"
                return output, {**then, "do": done}
            delay = semantics.retry_delay(then, tries)
            log.info(
                "retrying %s (try %d of %d) in %.2f s", item["label"], tries + 1, attempts, delay
            )
            why = semantics.error_message(output) if not semantics.is_ok(output) else "by policy"
            command_output.retrying(Retry(str(item["label"]), tries + 1, attempts, delay, why))
            await asyncio.sleep(delay)
            tries += 1


async def run_pipeline(
    items: Sequence[Mapping[str, Any]],
    payload: Mapping[str, Any],
    call: CallTool,
    keychain: Mapping[str, Any] | None = None,
    item_results: bool = False,
) -> PipelineResult:
    """`keychain`: the data of the playbook's keychain credentials, by keychain name.
    `item_results`: the result also carries each item's data by label (`results`)."""
    run = _Run(payload, call, keychain or {})
    by_label: dict[str, Any] = {}
    labels = {str(item["label"]): index for index, item in enumerate(items)}
    index, jumps, last = 0, 0, None
    while index < len(items):
        item = items[index]
        output, then = await run.item(item)
        action = then.get("do", "continue")
        if action == "fail":
            error = semantics.error_message(output, "failed by policy")
            return run.result(False, error=error, output=output)
        last = run.raw if semantics.is_ok(output) else output["data"]
        run.apply_set(item.get("set"), output)
        run.ctx[str(item["label"])] = by_label[str(item["label"])] = last  # as a step's
        run.ctx["_prev"] = last  # upstream: the previous item's result
        run.ctx["output"] = output  # upstream: the next item reads the previous item's outcome
        if action == "break":
            break
        if action == "jump":
            target = str(then.get("to") or then.get("label") or then.get("step") or "")
            jumps += 1
            if target not in labels:
                return run.result(False, error=f"jump to unknown item {target!r}")
            if jumps > MAX_JUMPS:
                return run.result(False, error=f"more than {MAX_JUMPS} jumps: a loop?")
            index = labels[target]
            continue
        index += 1
    return run.result(
        True, data=semantics.with_item_results(last, by_label) if item_results else last
    )
