"""Validate parsed YAML and build the immutable `Playbook`.

Every problem is collected (not only the first) with file, line, column and field path, then
raised together as one `PlaybookError`. Legacy spellings are normalised here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from noetl.dsl.model import Arc, Loop, Next, Playbook, Step, Tool
from noetl.dsl.source import Located, Path, load_yaml
from noetl.dsl.template import check_syntax, is_template
from noetl.dsl.tool_schema import TOOL_KINDS, check_keychain_entry, check_output, check_tool
from noetl.errors import PlaybookError, Problem

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

API_VERSIONS = frozenset({"noetl.io/v2", "noetl.io/v10"})
ROOT_KEYS = frozenset(
    {
        "apiVersion",
        "kind",
        "metadata",
        "workload",
        "keychain",
        "workbook",
        "workflow",
        "executor",
        "spec",
        "tracing",
    }
)
METADATA_KEYS = frozenset(
    {"name", "path", "description", "version", "labels", "tags", "exposes_as_mcp"}
)
EXECUTOR_KEYS = frozenset({"profile", "version", "requires", "pool", "spec"})
EXECUTOR_SPEC_KEYS = frozenset({"entry_step", "no_next_is_error", "policy", "max_step_runs"})
STEP_KEYS = frozenset(
    {
        "step",
        "desc",
        "description",
        "tool",
        "input",
        "args",
        "set",
        "next",
        "loop",
        "spec",
        "output",
    }
)
ARC_KEYS = frozenset({"step", "when", "set"})
LOOP_KEYS = frozenset({"in", "iterator", "spec", "cursor"})
LOOP_SPEC_KEYS = frozenset({"mode", "max_in_flight", "policy", "frame"})
LOOP_MODES = ("sequential", "parallel", "cursor")
LOOP_EXEC = frozenset({"local", "distributed"})
TOOL_SPEC_KEYS = frozenset({"policy", "timeout", "retry"})  # other `spec` keys are tool fields
NO_MATCH = ("quiet", "fail")
WORKBOOK_KEYS = frozenset({"name", "desc", "description", "tool", "assert"})
POLICY_ACTIONS = frozenset({"continue", "retry", "jump", "break", "fail"})
DEFAULT_MAX_IN_FLIGHT = 100
MAX_IN_FLIGHT = 10_000  # iterations issued at once: one decision writes and publishes them all
UNRENDERED = frozenset({"code"})  # python source is code, not a template


def parse_playbook(text: str, file: str | None = None) -> Playbook:
    """Parse and validate a playbook; raises `PlaybookError` listing every problem."""
    located = load_yaml(text, file)
    parser = _Parser(located)
    playbook = parser.playbook()
    if parser.problems or playbook is None:
        raise PlaybookError(parser.problems or [located.problem((), "empty playbook")])
    return playbook


class _Parser:
    def __init__(self, located: Located) -> None:
        self.src = located
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.arc_paths: dict[int, list[Path]] = {}

    def error(self, path: Path, message: str) -> None:
        self.problems.append(self.src.problem(path, message))

    def note(self, path: Path, message: str) -> None:
        """An accepted construct that has no effect here: `noetl validate` prints it."""
        self.notes.append(str(self.src.problem(path, message)))

    def mapping(self, value: Any, path: Path, allowed: frozenset[str] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {_kind(value)}")
            return {}
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    self.error(
                        (*path, key),
                        f"unknown key {key!r}; expected one of {', '.join(sorted(allowed))}",
                    )
        return value

    def text(self, value: Any, path: Path, *, required: bool = True) -> str | None:
        if value is None:
            if required:
                self.error(path, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(path, f"expected a non-empty string, got {_kind(value)}")
            return None
        return value

    def name(self, value: Any, path: Path, *, required: bool = True) -> str | None:
        """A name (of a step, a playbook, a workbook or keychain entry): a non-empty string
        without control characters (a NUL cannot be stored; a newline breaks every listing)."""
        found = self.text(value, path, required=required)
        if found is not None and (bad := _CONTROL.search(found)):
            self.error(path, f"a name may not contain the control character {bad[0]!r}")
            return None
        return found

    def templates(self, value: Any, path: Path) -> None:
        for sub_path, source in _strings(value, path):
            if is_template(source) and (message := check_syntax(source)):
                self.error(sub_path, message)

    # -- document -----------------------------------------------------------------------

    def playbook(self) -> Playbook | None:
        root = self.mapping(self.src.data, (), ROOT_KEYS)
        if not root:
            if self.src.data is None:
                self.error((), "the document is empty")
            return None
        api = root.get("apiVersion")
        if not isinstance(api, str) or api not in API_VERSIONS:
            self.error(
                ("apiVersion",), f"expected {' or '.join(sorted(API_VERSIONS))}, got {api!r}"
            )
        if root.get("kind") != "Playbook":
            self.error(("kind",), f"expected 'Playbook', got {root.get('kind')!r}")
        meta = self.mapping(root.get("metadata", {}), ("metadata",), METADATA_KEYS)
        if "exposes_as_mcp" in meta:
            self.note(
                ("metadata", "exposes_as_mcp"),
                "accepted, no effect here: this server does not expose playbooks as MCP tools",
            )
        if "tracing" in root:
            self.mapping(root["tracing"], ("tracing",), None)
            self.note(
                ("tracing",),
                "accepted, no effect here: there is no OTLP export; every event of an"
                " execution is in noetl.event and GET /api/executions/{id}/events",
            )
        spec = root.get("spec") or {}
        if not isinstance(spec, dict):
            self.error(("spec",), f"expected a mapping, got {_kind(spec)}")
            spec = {}
        self.templates(spec, ("spec",))
        self.executor(root.get("executor"))
        name = self.name(meta.get("name"), ("metadata", "name"))
        path = self.name(meta.get("path"), ("metadata", "path"), required=False) or name
        workload = root.get("workload") or {}
        if not isinstance(workload, dict):
            self.error(("workload",), f"expected a mapping, got {_kind(workload)}")
            workload = {}
        self.templates(workload, ("workload",))
        keychain = self.keychain(root.get("keychain") or [])
        workbook = self.workbook(root.get("workbook") or [])
        steps = self.steps(root.get("workflow"), workbook)
        entry = self.entry(root, steps)
        if self.problems or name is None or path is None or entry is None:
            return None
        version = meta.get("version")
        return Playbook(
            name=name,
            path=path,
            steps=steps,
            entry=entry,
            api_version=str(api),
            description=str(meta.get("description") or ""),
            version=None if version is None else str(version),
            workload=workload,
            keychain=tuple(keychain),
            workbook=workbook,
            spec=spec,
            notes=tuple(self.notes),
            max_step_runs=self.max_step_runs(root),
        )

    def executor(self, raw: Any) -> None:
        """Upstream's executor block: `spec.entry_step` is used; the rest is placement."""
        if raw is None:
            return
        data = self.mapping(raw, ("executor",), EXECUTOR_KEYS)
        spec = self.mapping(data.get("spec", {}), ("executor", "spec"), EXECUTOR_SPEC_KEYS)
        for key in ("profile", "version", "requires", "pool"):
            if key in data:
                self.note(
                    ("executor", key),
                    "accepted, no effect here: every step runs on this deployment's worker pool",
                )
        if "policy" in spec:
            self.note(
                ("executor", "spec", "policy"),
                "accepted, no effect here: timeouts and result storage are set per tool",
            )
        if spec.get("no_next_is_error"):
            self.note(
                ("executor", "spec", "no_next_is_error"),
                "accepted, no effect here: a step without `next` ends its branch",
            )

    def max_step_runs(self, root: Mapping[str, Any]) -> int | None:
        """`executor.spec.max_step_runs`: step runs one execution may make (a runaway loop)."""
        executor = root.get("executor")
        spec = executor.get("spec") if isinstance(executor, dict) else None
        value = spec.get("max_step_runs") if isinstance(spec, dict) else None
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.error(
                ("executor", "spec", "max_step_runs"),
                f"expected a positive integer, got {_kind(value)}",
            )
            return None
        return value

    def entry(self, root: Mapping[str, Any], steps: Mapping[str, Step]) -> str | None:
        if not steps:
            return None
        if "start" in steps:
            return "start"
        executor = root.get("executor")
        if isinstance(executor, dict) and isinstance(executor.get("spec"), dict):
            entry = executor["spec"].get("entry_step")
            if entry is not None:
                if not _one_of(entry, steps):
                    self.error(("executor", "spec", "entry_step"), f"unknown step {entry!r}")
                    return None
                return str(entry)
        return next(iter(steps))

    def keychain(self, entries: Any) -> list[dict[str, Any]]:
        """Entries `- {name, kind, ...}` (see `tool_schema.KEYCHAIN_KINDS`): templates read an
        entry's resolved values as keychain.<name>; the worker resolves them, nobody else."""
        if not isinstance(entries, list):
            self.error(("keychain",), f"expected a list, got {_kind(entries)}")
            return []
        found: list[dict[str, Any]] = []
        names: set[str] = set()
        for index, entry in enumerate(entries):
            path: Path = ("keychain", index)
            data = self.mapping(entry, path, None)
            if not data:
                continue
            name = self.name(data.get("name"), (*path, "name"))
            for sub_path, message in check_keychain_entry(data):
                self.error((*path, *sub_path), message)
            if name in names:
                self.error((*path, "name"), f"duplicate keychain entry {name!r}")
            self.templates(data, path)
            if name:
                names.add(name)
                found.append(dict(data))
        return found

    def workbook(self, items: Any) -> dict[str, Tool]:
        if not isinstance(items, list):
            self.error(("workbook",), f"expected a list, got {_kind(items)}")
            return {}
        tools: dict[str, Tool] = {}
        for index, item in enumerate(items):
            path: Path = ("workbook", index)
            entry = self.mapping(item, path, WORKBOOK_KEYS)
            name = self.name(entry.get("name"), (*path, "name"))
            tool = self.tool(entry.get("tool"), (*path, "tool"), {}) if entry else None
            if name and name in tools:
                self.error((*path, "name"), f"duplicate workbook entry {name!r}")
            elif name and tool:
                tools[name] = tool
        return tools

    # -- steps --------------------------------------------------------------------------

    def steps(self, workflow: Any, workbook: Mapping[str, Tool]) -> dict[str, Step]:
        if not isinstance(workflow, list) or not workflow:
            self.error(("workflow",), "expected a non-empty list of steps")
            return {}
        steps: dict[str, Step] = {}
        for index, raw in enumerate(workflow):
            step = self.step(raw, ("workflow", index), workbook)
            if step is None:
                continue
            if step.name in steps:
                self.error(("workflow", index, "step"), f"duplicate step name {step.name!r}")
            steps[step.name] = step
        declared = {
            raw["step"]
            for raw in workflow
            if isinstance(raw, dict) and isinstance(raw.get("step"), str)
        }
        for step in steps.values():
            for arc, path in zip(
                step.next.arcs if step.next else (),
                self.arc_paths.get(id(step.next), []),
                strict=False,
            ):
                if arc.step not in declared:
                    known = ", ".join(name for name in steps)
                    self.problems.append(
                        self.src.problem(path, f"unknown step {arc.step!r}; steps are {known}")
                    )
        return steps

    def step(self, raw: Any, path: Path, workbook: Mapping[str, Tool]) -> Step | None:
        data = self.mapping(raw, path, STEP_KEYS)
        if not data:
            return None
        name = self.name(data.get("step"), (*path, "step"))
        if "input" in data and "args" in data:
            self.error((*path, "args"), "use `input` (`args` is its legacy spelling), not both")
        step_input = data.get("input", data.get("args")) or {}
        if not isinstance(step_input, dict):
            self.error((*path, "input"), f"expected a mapping, got {_kind(step_input)}")
            step_input = {}
        self.templates(step_input, (*path, "input"))
        step_set = self.set_block(data.get("set"), (*path, "set"))
        if "tool" not in data:  # upstream: a routing-only step; here an implicit `kind: noop`
            tools: tuple[Tool, ...] = (Tool(kind="noop", config={}),)
        else:
            tools = self.tools(data["tool"], (*path, "tool"), workbook)
        next_ = self.next(data.get("next"), (*path, "next")) if "next" in data else None
        loop = self.loop(data["loop"], (*path, "loop")) if "loop" in data else None
        admit = self.admit(data.get("spec"), (*path, "spec"))
        output = data.get("output")
        for sub_path, message in check_output(output) if output is not None else ():
            self.error((*path, "output", *sub_path), message)
        if name is None or not tools:
            return None
        return Step(
            name=name,
            tools=tools,
            pipeline=isinstance(data.get("tool"), list),
            desc=str(data.get("desc") or data.get("description") or ""),
            input=step_input,
            set=step_set,
            next=next_,
            loop=loop,
            admit=admit,
            output=dict(output) if isinstance(output, dict) else {},
        )

    def admit(self, spec: Any, path: Path) -> tuple[Mapping[str, Any], ...]:
        """Step `spec.policy.admit.rules`: first match wins; `allow: false` skips the step."""
        if spec is None:
            return ()
        data = self.mapping(spec, path, frozenset({"policy"}))
        policy = self.mapping(data.get("policy", {}), (*path, "policy"), frozenset({"admit"}))
        admit_path = (*path, "policy", "admit")
        admit = self.mapping(policy.get("admit", {}), admit_path, frozenset({"mode", "rules"}))
        if admit.get("mode", "exclusive") != "exclusive":
            self.error((*admit_path, "mode"), "expected exclusive (the first matching rule wins)")
        rules = admit.get("rules", [])
        if not isinstance(rules, list):
            self.error((*admit_path, "rules"), f"expected a list, got {_kind(rules)}")
            return ()
        found: list[Mapping[str, Any]] = []
        for index, rule in enumerate(rules):
            rule_path = (*admit_path, "rules", index)
            when, then, then_path = self.rule_parts(rule, rule_path)
            allow = then.get("allow", True)
            if not isinstance(allow, bool) and not is_template(allow):
                self.error((*then_path, "allow"), "expected true, false or a template")
            self.templates(when, (*rule_path, "when"))
            found.append({"when": when, "allow": allow})
        return tuple(found)

    def rule_parts(self, rule: Any, path: Path) -> tuple[Any, dict[str, Any], Path]:
        """`{when, then}`, `{else: {then}}`, `{else: {do: ...}}` (the shorthand) or
        `{else: null, then: {...}}` (YAML of `- else:` with `then:` under the dash):
        returns (when or None, then, where then is)."""
        entry = self.mapping(rule, path, frozenset({"when", "then", "else"}))
        if "else" not in entry:
            then_path: Path = (*path, "then")
            return (
                entry.get("when"),
                self.mapping(entry.get("then", {}), then_path, None),
                then_path,
            )
        if "when" in entry:
            self.error((*path, "when"), "an `else` rule has no `when`")
        otherwise = entry["else"]
        if otherwise is None:
            then_path = (*path, "then")
            return None, self.mapping(entry.get("then", {}), then_path, None), then_path
        if "then" in entry:
            self.error((*path, "then"), "put `then` inside `else`, not next to it")
        data = self.mapping(otherwise, (*path, "else"), None)
        if "then" in data:
            if len(data) > 1:
                extra = sorted(k for k in data if k != "then")
                self.error((*path, "else"), f"unexpected keys next to `then`: {extra}")
            then_path = (*path, "else", "then")
            return None, self.mapping(data["then"], then_path, None), then_path
        return None, data, (*path, "else")  # the shorthand `else: {do: continue, ...}`

    def set_block(self, value: Any, path: Path) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping of variable: value, got {_kind(value)}")
            return {}
        self.set_keys(value, path)
        self.templates(value, path)
        return value

    def set_keys(self, value: Mapping[str, Any], path: Path) -> None:
        for key in value:
            if not all(str(key).split(".")):
                self.error(
                    (*path, key),
                    f"{str(key)!r} is not a variable name: a dotted name has no empty part",
                )

    # -- tools --------------------------------------------------------------------------

    def tools(self, raw: Any, path: Path, workbook: Mapping[str, Tool]) -> tuple[Tool, ...]:
        return self._tools(raw, path, workbook)

    def _tools(self, raw: Any, path: Path, workbook: Mapping[str, Tool]) -> tuple[Tool, ...]:
        if isinstance(raw, dict):
            tool = self.tool(raw, path, workbook)
            return (tool,) if tool else ()
        if not isinstance(raw, list) or not raw:
            self.error(path, "expected a tool mapping with `kind`, or a non-empty list of tools")
            return ()
        tools: list[Tool] = []
        labels: set[str] = set()
        for index, item in enumerate(raw):
            item_path = (*path, index)
            label: str | None = None
            body = item
            if isinstance(item, dict) and len(item) == 1 and "kind" not in item:
                ((label, body),) = item.items()  # legacy `- label: {kind: ...}`
                item_path = (*item_path, label)
            tool = self.tool(body, item_path, workbook, label=label)
            if tool is None:
                continue
            label = tool.name or f"item{index}"
            if label in labels:
                self.error(item_path, f"duplicate pipeline label {label!r}")
            labels.add(label)
            tools.append(tool)
        return tuple(tools)

    def tool(
        self, raw: Any, path: Path, workbook: Mapping[str, Tool], *, label: str | None = None
    ) -> Tool | None:
        data = self.mapping(raw, path, None)
        if not data:
            return None
        kind = data.get("kind")
        if not isinstance(kind, str) or kind not in TOOL_KINDS:
            got = "nothing" if kind is None else repr(kind)
            self.error(
                (*path, "kind"), f"expected one of {', '.join(sorted(TOOL_KINDS))}; got {got}"
            )
            return None
        data = self.spec_fields(data, path)
        config = {k: v for k, v in data.items() if k not in {"kind", "set", "spec"}}
        if kind != "workbook" and label is None and "name" in config:
            label = str(config.pop("name"))
        if kind == "workbook":
            target = config.get("name")
            if not _one_of(target, workbook) and path[0] != "workbook":
                self.error((*path, "name"), f"unknown workbook entry {target!r}")
        self.templates({k: v for k, v in config.items() if k not in UNRENDERED}, path)
        for sub_path, message in check_tool(kind, config):
            self.error((*path, *sub_path), message)
        if "output" in config:
            for sub_path, message in check_output(config["output"]):
                self.error((*path, "output", *sub_path), message)
        return Tool(
            kind=kind,
            config=config,
            name=label,
            set=self.set_block(data.get("set"), (*path, "set")),
            policy=self.policy(data.get("spec"), (*path, "spec")),
        )

    def spec_fields(self, data: dict[str, Any], path: Path) -> dict[str, Any]:
        """Upstream's v10 form puts tool fields under `spec` (`spec: {url, method, code}`):
        they are the tool's own fields; `spec` keeps policy, timeout and retry."""
        spec = data.get("spec")
        if not isinstance(spec, dict):
            return data
        fields = {k: v for k, v in spec.items() if k not in TOOL_SPEC_KEYS}
        if not fields:
            return data
        for key in fields:
            if key in data:
                self.error((*path, "spec", key), f"{key!r} is given both in the tool and its spec")
        kept = {k: v for k, v in spec.items() if k in TOOL_SPEC_KEYS}
        return {**data, **fields, "spec": kept}

    def policy(self, spec: Any, path: Path) -> tuple[Mapping[str, Any], ...]:
        if spec is None:
            return ()
        data = self.mapping(spec, path, TOOL_SPEC_KEYS)
        policy = self.mapping(data.get("policy", {}), (*path, "policy"), frozenset({"rules"}))
        rules = policy.get("rules", [])
        if not isinstance(rules, list):
            self.error((*path, "policy", "rules"), f"expected a list, got {_kind(rules)}")
            return ()
        checked: list[Mapping[str, Any]] = []
        for index, rule in enumerate(rules):
            rule_path = (*path, "policy", "rules", index)
            when, then, then_path = self.rule_parts(rule, rule_path)
            entry = {"when": when, "then": then}
            if isinstance(then.get("set"), dict):
                self.set_keys(then["set"], (*then_path, "set"))
            if not _one_of(then.get("do"), POLICY_ACTIONS):
                self.error(
                    (*then_path, "do"), f"expected one of {', '.join(sorted(POLICY_ACTIONS))}"
                )
            self.templates(entry, rule_path)
            checked.append(entry)
        return tuple(checked)

    # -- routing and loops --------------------------------------------------------------

    def next(self, raw: Any, path: Path) -> Next | None:
        mode, on_no_match = "exclusive", "quiet"
        arcs_raw: Any = raw
        arcs_path = path
        if isinstance(raw, dict):
            data = self.mapping(raw, path, frozenset({"spec", "arcs"}))
            spec = self.mapping(
                data.get("spec", {}), (*path, "spec"), frozenset({"mode", "on_no_match"})
            )
            on_no_match = spec.get("on_no_match", "quiet")
            if not _one_of(on_no_match, NO_MATCH):
                self.error(
                    (*path, "spec", "on_no_match"), f"expected quiet or fail, got {on_no_match!r}"
                )
            mode = spec.get("mode", "exclusive")
            if not _one_of(mode, {"exclusive", "inclusive"}):
                self.error(
                    (*path, "spec", "mode"), f"expected exclusive or inclusive, got {mode!r}"
                )
            arcs_raw, arcs_path = data.get("arcs", []), (*path, "arcs")
        elif isinstance(raw, str):
            arcs_raw = [raw]
        if not isinstance(arcs_raw, list):
            self.error(arcs_path, f"expected a list of arcs, got {_kind(arcs_raw)}")
            return None
        arcs: list[Arc] = []
        paths: list[Path] = []  # where each arc sits in the source, for later errors
        for index, item in enumerate(arcs_raw):
            arc_path = (*arcs_path, index)
            if isinstance(item, str):
                arcs.append(Arc(step=item))
                paths.append(arc_path)
                continue
            data = self.mapping(item, arc_path, ARC_KEYS)
            target = self.text(data.get("step"), (*arc_path, "step")) if data else None
            when = data.get("when")
            if when is not None and not isinstance(when, str | bool):
                self.error((*arc_path, "when"), f"expected a template string, got {_kind(when)}")
            self.templates(when, (*arc_path, "when"))
            arc_set = self.set_block(data.get("set"), (*arc_path, "set"))
            if target:
                arcs.append(Arc(step=target, when=None if when is None else str(when), set=arc_set))
                paths.append((*arc_path, "step"))
        result = Next(
            mode="inclusive" if mode == "inclusive" else "exclusive",
            arcs=tuple(arcs),
            on_no_match="fail" if on_no_match == "fail" else "quiet",
        )
        self.arc_paths[id(result)] = paths
        return result

    def max_in_flight(self, cap: Any, path: Path) -> Any:
        """A loop's cap: a template (checked when the step runs), or 1 to `MAX_IN_FLIGHT`."""
        where = (*path, "spec", "max_in_flight")
        if is_template(cap):
            self.templates(cap, where)
            return cap
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            self.error(where, "expected a positive integer or a template")
            return DEFAULT_MAX_IN_FLIGHT
        if cap > MAX_IN_FLIGHT:
            self.error(where, f"{cap} is over the limit of {MAX_IN_FLIGHT}")
            return DEFAULT_MAX_IN_FLIGHT
        return cap

    def loop(self, raw: Any, path: Path) -> Loop | None:
        data = self.mapping(raw, path, LOOP_KEYS)
        if not data:
            return None
        iterator = self.text(data.get("iterator"), (*path, "iterator"))
        spec = self.mapping(data.get("spec", {}), (*path, "spec"), LOOP_SPEC_KEYS)
        mode = spec.get("mode", "cursor" if "cursor" in data else "sequential")
        if not _one_of(mode, LOOP_MODES):
            self.error(
                (*path, "spec", "mode"), f"expected sequential, parallel or cursor, got {mode!r}"
            )
        cursor = None
        if mode == "cursor" or "cursor" in data:
            cursor = self.mapping(data.get("cursor"), (*path, "cursor"), None)
            if mode != "cursor":
                self.error((*path, "spec", "mode"), "a loop with `cursor` has mode cursor")
            if "in" in data:
                self.error((*path, "in"), "a cursor loop takes its items from `cursor`, not `in`")
            if cursor is not None and not isinstance(cursor.get("claim"), str):
                self.error((*path, "cursor", "claim"), "is required (the claim query)")
        elif "in" not in data:
            self.error((*path, "in"), "is required (a list, a mapping, a number or a template)")
        self.templates(data.get("in"), (*path, "in"))
        self.templates(cursor, (*path, "cursor"))
        policy = self.mapping(
            spec.get("policy", {}), (*path, "spec", "policy"), frozenset({"exec", "results"})
        )
        if not _one_of(policy.get("exec", "local"), LOOP_EXEC):
            self.error((*path, "spec", "policy", "exec"), "expected local or distributed")
        self.mapping(policy.get("results", {}), (*path, "spec", "policy", "results"), None)
        frame = self.mapping(spec.get("frame", {}), (*path, "spec", "frame"), None) or {}
        self.templates(frame, (*path, "spec", "frame"))
        if frame.get("process", "row") not in ("row", "frame"):
            self.error((*path, "spec", "frame", "process"), "expected row or frame")
        cap = self.max_in_flight(spec.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT), path)
        if iterator is None or ("in" not in data and cursor is None):
            return None
        return Loop(
            collection=data.get("in"),
            iterator=iterator,
            mode="cursor"
            if cursor is not None
            else "parallel"
            if mode == "parallel"
            else "sequential",
            max_in_flight=cap,
            cursor=cursor,
            frame=frame if cursor is not None else {},
        )


def _one_of(value: Any, options: Collection[str]) -> bool:
    """`value in options`, for values of any type (a list is never a step name)."""
    return isinstance(value, str) and value in options


def _strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
