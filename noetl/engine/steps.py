"""Static facts about steps and loops, used by the engine when it issues commands."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from noetl.dsl import semantics
from noetl.dsl.model import Playbook, Step
from noetl.dsl.parse import MAX_IN_FLIGHT, UNRENDERED
from noetl.dsl.template import (
    attributes_read,
    is_template,
    names_read_beyond,
    plain,
    referenced_names,
)
from noetl.engine.state import LoopState


def runs_on_worker(step: Step) -> bool:
    """Pipelines, policies and item `set` need the worker to render between tool runs."""
    return len(step.tools) > 1 or any(tool.policy or tool.set for tool in step.tools)


@lru_cache(maxsize=1024)
def names_read(playbook: Playbook, step_name: str) -> frozenset[str]:
    """Every top-level name the templates of a step's tools (and workbook targets) read."""
    sources, code_read = _tool_sources(playbook, step_name)
    return code_read | template_names(sources)


@lru_cache(maxsize=1024)
def names_read_whole(playbook: Playbook, step_name: str) -> frozenset[str]:
    """`names_read` less the names its templates read only through a finished loop's
    summary fields (`loop_step.count`): what the step needs in full. Its code reads names
    whole."""
    sources, code_read = _tool_sources(playbook, step_name)
    return code_read | whole_names(sources)


def _tool_sources(playbook: Playbook, step_name: str) -> tuple[list[Any], frozenset[str]]:
    """The templated parts of a step's tools (and workbook targets), and the names their
    code reads (with the keychain's entries when they are read)."""
    step = playbook.step(step_name)
    sources: list[Any] = [step.input]
    code_read: frozenset[str] = frozenset()
    for tool in step.tools:
        target = (
            playbook.workbook.get(str(tool.config.get("name"))) if tool.kind == "workbook" else None
        )
        for item in (tool, target) if target else (tool,):
            sources += [
                {k: v for k, v in item.config.items() if k not in UNRENDERED},
                item.set,
                list(item.policy),
            ]
            code_read |= semantics.code_names(item.config.get("code"))
    if "keychain" in code_read | template_names(sources):  # the worker renders the entries
        sources += [dict(entry) for entry in playbook.keychain]  # too, with the same context
    return sources, code_read


@lru_cache(maxsize=1024)
def reads_item_results(playbook: Playbook, step_name: str) -> bool:
    """Whether a template of the playbook reads `<step>.results`: a pipeline step's result
    then also carries each item's data by label (upstream's `step.results.<label>`)."""
    for step in playbook.steps.values():
        loop = step.loop.collection if step.loop else None
        arcs = [[arc.when, arc.set] for arc in step.next.arcs] if step.next else []
        tools = [[dict(t.config), t.set, list(t.policy)] for t in step.tools]
        for text in template_strings([step.input, step.set, loop, arcs, tools]):
            if (step_name, "results") in attributes_read(text):
                return True
    return False


def template_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if is_template(value) else []
    if isinstance(value, Mapping):
        return [text for item in value.values() for text in template_strings(item)]
    if isinstance(value, list | tuple):
        return [text for item in value for text in template_strings(item)]
    return []


MAX_LOOP_ITEMS = 1_000_000


def collection(value: Any) -> list[Any] | range:
    size = len(value) if isinstance(value, list | dict) else value
    if isinstance(size, int) and not isinstance(size, bool) and size > MAX_LOOP_ITEMS:
        raise TypeError(f"{size} items is more than a loop takes ({MAX_LOOP_ITEMS})")
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [{"key": key, "value": item} for key, item in value.items()]
    if isinstance(value, int) and not isinstance(value, bool):
        return range(value)  # item i is i: nothing to store
    if value is None:
        return []
    raise TypeError(f"expected a list, a mapping or an integer, got {type(value).__name__}")


def loop_summary(loop: LoopState) -> dict[str, Any]:
    """A finished loop's result without its `results` (those are read from the event log).
    `stats` is the same counts as upstream's engine names them (`total`: the iterations
    that finished), which upstream playbooks read."""
    finished = loop.succeeded + loop.failed
    return {
        "count": loop.count,
        "succeeded": loop.succeeded,
        "failed": loop.failed,
        "stats": {"total": finished, "success": loop.succeeded, "failed": loop.failed},
    }


def template_names(value: Any) -> frozenset[str]:
    """Top-level names the templates inside `value` read."""
    names: set[str] = set()
    for text in template_strings(value):
        names |= referenced_names(text)
    return frozenset(names)


SUMMARY_FIELDS = frozenset({"count", "succeeded", "failed", "stats"})  # `loop_summary`'s


def whole_names(value: Any) -> frozenset[str]:
    """`template_names` less the names read only through `SUMMARY_FIELDS`."""
    names: set[str] = set()
    for text in template_strings(value):
        names |= names_read_beyond(text, SUMMARY_FIELDS)
    return frozenset(names)


Part = Literal["admit", "collection", "cursor", "cap", "completion", "arcs"]


@lru_cache(maxsize=4096)
def names_in(playbook: Playbook, step_name: str, part: Part) -> frozenset[str]:
    """`template_names` of one part of a step, worked out once per playbook and step rather
    than per decision: `admit` rules, loop `collection`, `cursor` (and frame) and `cap`
    (max_in_flight), `arcs` (their `when` and `set`), and `completion` (what a finished
    step's templates read: the item's `set` unless the worker applied it, the step's `set`,
    the arcs)."""
    return template_names(_part_sources(playbook, step_name, part))


@lru_cache(maxsize=4096)
def names_in_whole(playbook: Playbook, step_name: str, part: Part) -> frozenset[str]:
    """`names_in` less the names read only through a finished loop's summary fields."""
    return whole_names(_part_sources(playbook, step_name, part))


def _part_sources(playbook: Playbook, step_name: str, part: Part) -> Any:
    step = playbook.step(step_name)
    arcs = [[arc.when, arc.set] for arc in step.next.arcs] if step.next else []
    match part:
        case "admit":
            return list(step.admit)
        case "collection":
            return step.loop.collection if step.loop else None
        case "cursor":
            spec = step.loop
            return [dict(spec.cursor or {}), dict(spec.frame)] if spec is not None else None
        case "cap":
            return step.loop.max_in_flight if step.loop else None
        case "arcs":
            return arcs
        case "completion":
            item_set = {} if runs_on_worker(step) else step.tool.set
            return [item_set, step.set, *arcs]


# -- cursor loops ------------------------------------------------------------------------

MAX_CURSOR_ITEMS = 1_000_000  # rows one cursor loop run may claim (a claim that never drains)
CURSOR_KINDS = frozenset({"postgres"})


@dataclass(frozen=True)
class Frame:
    max_rows: int = 1  # injected as `__frame_max_rows` into the claim
    row_concurrency: int = 1  # iterations of one frame in flight at once


def _positive(frame: Mapping[str, Any], key: str, limit: int | None = None) -> int:
    value = frame.get(key, 1)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or isinstance(value, bool):
        raise ValueError(f"spec.frame.{key} must be a positive integer, got {value!r}")
    if limit is not None and number > limit:
        raise ValueError(f"spec.frame.{key}: {number} is over the limit of {limit}")
    return number


def cursor_frame(frame: Any) -> Frame:
    """The load-bearing fields of a rendered `spec.frame` (the others are accepted)."""
    if not isinstance(frame, Mapping):
        raise TypeError(f"spec.frame must be a mapping, got {type(frame).__name__}")
    concurrency = _positive(frame, "row_concurrency", MAX_IN_FLIGHT)  # like max_in_flight
    return Frame(_positive(frame, "max_rows"), concurrency)


def cursor_claim(cursor: Any) -> dict[str, Any]:
    """The tool of a claim command, from a rendered `loop.cursor`."""
    kind = str(cursor.get("kind") or "postgres")
    if kind not in CURSOR_KINDS:
        raise ValueError(f"cursor kind {kind!r} is not supported here (postgres is)")
    claim = cursor.get("claim")
    if not isinstance(claim, str) or not claim.strip():
        raise ValueError("loop.cursor.claim rendered empty")
    auth = cursor.get("auth")
    return {"kind": kind, "query": claim, **({"auth": plain(auth)} if auth else {})}


def claimed_rows(result: Any) -> list[Any] | None:
    """The rows a claim returned: the postgres result's `rows` (or the last statement's that
    has rows), or a plain list; None when the result has no rows at all."""
    if isinstance(result, list):
        return result
    if not isinstance(result, Mapping):
        return None
    if isinstance(result.get("rows"), list):
        return list(result["rows"])
    statements = [
        value
        for key, value in result.items()
        if key.startswith("command_") and isinstance(value, Mapping)
    ]
    with_rows = [s["rows"] for s in statements if isinstance(s.get("rows"), list)]
    if with_rows:
        return list(with_rows[-1])
    if "affected_rows" in result:
        return []
    return None
