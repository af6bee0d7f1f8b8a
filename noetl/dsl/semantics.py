"""What the playbook language means, in one place: `set`, tool rendering, the outcome
envelope, policy rules. Pure functions of their arguments; no I/O, no clock.

Two sides run these rules, and each rule is written once, here:

    server (engine/decide.py)         worker (worker/pipeline.py)
    ---------------------------       ------------------------------------------------
    render a one-tool step            render each pipeline item just before it runs
    step `set`, arcs, arc `set`       item `set`, policy rules (retry/jump/break/...)
    loop collections, routing         the tool runs; retries sleep between tries

A step runs on the worker item by item (a *pipeline*) when it has several tools, or a tool
with a policy or its own `set`: those rules must run between tool runs, next to the tool.
Everything else about a step (its `set`, its arcs, loops, fan-in) is the engine's.

One error behaviour for both sides:
- a template error while rendering a tool's fields or input is an error of that tool call
  (the engine fails the step; in a pipeline the item's policy sees it, default: fail);
- a template error in a `set` value skips that one assignment and is returned as a problem;
  the problems are recorded in the step's `step.exit` event (`payload.problems`), never
  dropped, never fatal;
- a `when` that cannot be evaluated is false, and its problem is recorded the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from noetl.dsl.bounds import TemplateLimitError
from noetl.dsl.model import Playbook, Tool
from noetl.dsl.parse import UNRENDERED
from noetl.dsl.template import (
    check_syntax,
    evaluate_condition,
    is_template,
    plain,
    referenced_names,
    render,
    render_lenient,
)
from noetl.errors import TemplateError

SET_SCOPES = frozenset({"ctx", "iter", "step", "vars"})  # prefixes a `set` key may carry
LOCAL_SCOPES = ("iter", "step")  # `iter.x` stays in the loop iteration, `step.x` in the step

# `event.name` in arcs: why the step's arcs are being evaluated (upstream's names)
CALL_DONE = "call.done"  # a step's tool (or pipeline) finished
CALL_ERROR = "call.error"  # it failed: arcs that read the outcome may route the failure
LOOP_DONE = "loop.done"  # a loop step finished all its iterations

OK = "ok"
ERROR = "error"


def execution_names(execution_id: int) -> dict[str, Any]:
    """`execution_id` and `job.*` as templates see them: the id as text, as upstream passes
    it (its fixtures slice it: `execution_id[:8]`); text renders the same in SQL and URLs."""
    text = str(execution_id)
    return {"execution_id": text, "job": {"uuid": text, "execution_id": text}}


# -- the outcome envelope: `output` in `set`, arcs and policy rules ---------------------


def succeeded(data: Any, kind: str | None = None) -> dict[str, Any]:
    """`output` of a tool call that returned `data`; with the tool's `kind`, also upstream's
    per-kind views: `output.http` ({status, headers}), `output.pg`, `output.py`. For an http
    call `output.data` is the response body (as upstream has it); the step's result, read by
    its name, stays the whole `{status_code, headers, data}`.

    When `output.data` is a mapping its fields are also fields of `output` itself; the
    envelope's own names (`status`, `data`, `error`, `response`, `http`, `pg`, `py`) win on a
    clash. Upstream fixtures keep a task's outcome with `set: {x: "{{ output }}"}` and read
    `x['count']` in python code, where no template lookup can look into `data` for them."""
    views = _kind_views(kind, data)
    if "http" in views and isinstance(data, Mapping):  # upstream: output.data is the body
        data = data.get("data", data.get("body"))
    output = dict(data) if isinstance(data, Mapping) else {}
    output.update({"status": OK, "data": data, "error": None, "response": data})
    output.update(views)
    return output


def failed(
    message: str,
    *,
    retryable: bool = False,
    kind: str | None = None,
    details: Mapping[str, Any] | None = None,
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`output` of a tool call that failed with `message`. `details` is what the tool knew
    (an HTTP error's response): `output.http.status`, `output.error.status` and
    `output.error.kind` (rate_limit, server_error, auth, not_found, client_error, error).
    `fields`: `error_fields` of the failure as a worker reported it (the server's side)."""
    error: dict[str, Any] = {"message": message, "retryable": retryable, "kind": "error"}
    if fields:
        error.update(fields)
    output: dict[str, Any] = {"status": ERROR, "data": None, "error": error, "response": None}
    if details:
        views = _kind_views("http" if "status_code" in details else kind, details)
        output.update(views)
        status = details.get("status_code")
        if isinstance(status, int):
            error["status"] = status
            error["kind"] = _error_kind(status)
    return output


ERROR_FIELDS = ("retryable", "kind", "status")


def error_fields(output: Mapping[str, Any]) -> dict[str, Any]:
    """`output.error` of a failed call without its message: what a worker reports with the
    failure, so that the arcs the server fires on `call.error` read what the step's policy
    rules read (`failed(message, fields=...)`)."""
    error = output.get("error")
    if not isinstance(error, Mapping):
        return {}
    return {name: error[name] for name in ERROR_FIELDS if name in error}


def with_item_results(data: Any, results: Mapping[str, Any]) -> Any:
    """A pipeline step's result (the data of its last item) with upstream's `results`: each
    item's data by label, read as `{{ step.results.<label> }}`. Only a mapping without a
    `results` key of its own gains it; anything else is returned as it is."""
    if not isinstance(data, Mapping) or "results" in data:
        return data
    return {**data, "results": dict(results)}


def _kind_views(kind: str | None, data: Any) -> dict[str, Any]:
    if kind == "http" and isinstance(data, Mapping) and "status_code" in data:
        return {"http": {"status": data["status_code"], "headers": data.get("headers") or {}}}
    if kind == "postgres":
        return {"pg": data}
    if kind == "python":
        return {"py": data}
    return {}


def _error_kind(status: int) -> str:
    if status == 429:
        return "rate_limit"
    if status >= 500:
        return "server_error"
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    return "client_error" if status >= 400 else "error"


def is_ok(output: Mapping[str, Any]) -> bool:
    return output.get("status") == OK


def error_message(output: Mapping[str, Any], default: str = "failed") -> str:
    error = output.get("error")
    if isinstance(error, Mapping) and error.get("message"):
        return str(error["message"])
    return default


# -- tools ------------------------------------------------------------------------------


def resolve(playbook: Playbook | None, tool: Tool) -> tuple[Tool, dict[str, Any]]:
    """A workbook reference becomes the named tool, its input merged under the caller's."""
    config = dict(tool.config)
    if tool.kind != "workbook" or playbook is None:
        return tool, config
    entry = playbook.workbook[str(config["name"])]
    merged_input = {**entry.config.get("input", {}), **config.get("input", {})}
    return entry, {**entry.config, "input": merged_input}


def render_tool(
    config: Mapping[str, Any], step_input: Mapping[str, Any], scope: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A tool's fields and input rendered against `scope`: (fields without `kind`, input).

    The input is the step's `input` with the tool's own `input` merged over it. Fields named
    in UNRENDERED (python `code`) are passed as written. Raises TemplateError.
    """
    fields = dict(config)
    fields.pop("kind", None)
    raw_input = {**step_input, **(fields.pop("input", None) or {})}
    rendered = {
        k: render_code(v, scope) if k in UNRENDERED else render(v, scope) for k, v in fields.items()
    }
    code = fields.get("code")
    if isinstance(code, str) and _CONTEXT.search(code):
        explicit = rendered.get("context")
        rendered["context"] = {
            **{name: scope[name] for name in context_names(code) if name in scope},
            **(explicit if isinstance(explicit, Mapping) else {}),
        }
    return plain(rendered), plain(render(raw_input, scope))


_CONTEXT = re.compile(r"\bcontext\b")
_QUOTED = re.compile(r"""["']([A-Za-z_][A-Za-z0-9_]*)["']""")


def render_code(code: Any, scope: Mapping[str, Any]) -> Any:
    """Python `code` with Jinja in it is rendered before it runs, as upstream does
    (`{{ fetch_page }}` in code), and as leniently: an undefined name renders empty. Code
    whose braces are not a valid template (`{{1: 2}}`, a set in a dict) is passed as written."""
    if not isinstance(code, str) or not is_template(code) or check_syntax(code):
        return code
    return str(render_lenient(code, scope))


def context_names(code: str) -> frozenset[str]:
    """Names python code reads from its `context` global (upstream: the whole template
    context): the quoted identifiers in code that mentions `context`. The engine and the
    pipeline put those of them that exist into the tool's `context` field."""
    if not _CONTEXT.search(code):
        return frozenset()
    return frozenset(_QUOTED.findall(code))


def code_names(code: Any) -> frozenset[str]:
    """Top-level names python code reads: those of its Jinja, and `context_names`."""
    if not isinstance(code, str):
        return frozenset()
    names = context_names(code)
    if is_template(code) and not check_syntax(code):
        names |= referenced_names(code)
    return names


# -- set --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assigned:
    """The result of one `set` block."""

    variables: dict[str, Any]  # the new variable map (a copy; the old one is untouched)
    changed: tuple[str, ...] = ()  # top-level names written
    problems: tuple[str, ...] = ()  # template errors, one per skipped assignment
    local: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # new `iter` / `step`


def target(key: str) -> list[str]:
    """The path a `set` key writes in the variable map: `ctx.a.b` and `a.b` → [a, b]."""
    parts = key.split(".")
    if parts[0] in SET_SCOPES and len(parts) > 1:
        parts = parts[1:]
    return parts


def assign(
    variables: Mapping[str, Any], assignments: Mapping[str, Any], scope: Mapping[str, Any]
) -> Assigned:
    """Apply a `set` block. Every value is rendered against `scope` before any is written;
    a dotted key writes into nested maps, copying each one it changes."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, template in assignments.items():
        try:
            values[key] = plain(render(template, scope))
        except TemplateLimitError:
            raise  # a template bomb fails the step; it is not a skipped value
        except TemplateError as exc:
            problems.append(f"set {key}: {exc}")
    if not values:
        return Assigned(dict(variables), (), tuple(problems))
    new = dict(variables)
    changed: dict[str, None] = {}
    local: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if head in LOCAL_SCOPES and rest:  # `iter.x` / `step.x`: not an execution variable
            if head not in local:
                current = scope.get(head)
                local[head] = dict(current) if isinstance(current, Mapping) else {}
            _write(local[head], rest.split("."), value)
            continue
        parts = target(key)
        _write(new, parts, value)
        changed[parts[0]] = None
    return Assigned(new, tuple(changed), tuple(problems), local)


def _write(node: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set `parts` in nested maps, copying each map on the way (states share them)."""
    for part in parts[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[parts[-1]] = value


def assigned_names(tools: Sequence[Tool]) -> frozenset[str]:
    """Top-level variables the `set` blocks of pipeline items and their policy rules write."""
    keys: list[str] = []
    for tool in tools:
        keys += list(tool.set)
        for rule in tool.policy:
            then = rule.get("then")
            if isinstance(then, Mapping) and isinstance(then.get("set"), Mapping):
                keys += list(then["set"])
    return frozenset(
        target(str(key))[0] for key in keys if str(key).partition(".")[0] not in LOCAL_SCOPES
    )


def rescope(scope: dict[str, Any], assigned: Assigned) -> None:
    """Make later templates of `scope` see what a `set` block wrote (`ctx.x`, `vars.x`, `x`)."""
    scope["ctx"] = scope["vars"] = assigned.variables
    for name in assigned.changed:
        scope[name] = assigned.variables[name]
    scope.update(assigned.local)  # `iter` / `step` as the block left them


# -- conditions and policy rules ---------------------------------------------------------


def fires(when: Any, scope: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Whether a `when` holds (no `when` holds); a problem makes it false and is returned."""
    return evaluate_condition(when, scope)


def rule_for(
    rules: Sequence[Mapping[str, Any]], output: Mapping[str, Any], scope: Mapping[str, Any]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The `then` of the first policy rule whose `when` holds for `output` (`else` always
    holds), with the problems met on the way. Without a match: continue when ok, else fail."""
    rule_scope = {**scope, "output": output}
    problems: list[str] = []
    for rule in rules:
        matched, problem = fires(rule.get("when"), rule_scope)
        if problem:
            problems.append(f"policy rule: {problem}")
        if matched:
            then = rule.get("then") or {}
            return (dict(then) if isinstance(then, Mapping) else {}), tuple(problems)
    return {"do": "continue" if is_ok(output) else "fail"}, tuple(problems)


MAX_DELAY = 300.0  # seconds: the longest wait a retry rule may ask for


def retry_delay(then: Mapping[str, Any], tries: int) -> float:
    """Seconds to wait before try `tries + 1` of a `do: retry` rule."""
    base = float(then.get("delay", 1.0))
    backoff = str(then.get("backoff", "fixed"))
    factor = {"linear": tries, "exponential": 2 ** (tries - 1)}.get(backoff, 1)
    return float(min(base * factor, MAX_DELAY))
