"""Validate parsed YAML and build the immutable `Playbook`.

Every problem is collected (not only the first) with file, line, column and field path, then
raised together as one `PlaybookError`. Legacy spellings are normalised here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from noetl.dsl.model import Arc, Loop, Next, Playbook, Step, Tool
from noetl.dsl.source import Located, Path, load_yaml
from noetl.dsl.template import check_syntax, is_template
from noetl.errors import PlaybookError, Problem

API_VERSIONS = frozenset({"noetl.io/v2", "noetl.io/v10"})
TOOL_KINDS = frozenset(
    {"python", "http", "postgres", "duckdb", "shell", "noop", "workbook", "playbook"}
)
ROOT_KEYS = frozenset(
    {"apiVersion", "kind", "metadata", "workload", "keychain", "workbook", "workflow", "executor"}
)
METADATA_KEYS = frozenset({"name", "path", "description", "version", "labels", "tags"})
STEP_KEYS = frozenset(
    {"step", "desc", "description", "tool", "input", "args", "set", "next", "loop"}
)
ARC_KEYS = frozenset({"step", "when", "set"})
LOOP_KEYS = frozenset({"in", "iterator", "spec"})
LOOP_SPEC_KEYS = frozenset({"mode", "max_in_flight"})
WORKBOOK_KEYS = frozenset({"name", "desc", "description", "tool", "assert"})
POLICY_ACTIONS = frozenset({"continue", "retry", "jump", "break", "fail"})
DEFAULT_MAX_IN_FLIGHT = 100
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
        self.arc_paths: dict[int, list[Path]] = {}

    def error(self, path: Path, message: str) -> None:
        self.problems.append(self.src.problem(path, message))

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
        name = self.text(meta.get("name"), ("metadata", "name"))
        path = self.text(meta.get("path"), ("metadata", "path"), required=False) or name
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
        )

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

    def keychain(self, entries: Any) -> list[dict[str, str]]:
        """`- {name, credential}`: templates read the credential's data as keychain.<name>."""
        if not isinstance(entries, list):
            self.error(("keychain",), f"expected a list, got {_kind(entries)}")
            return []
        found: list[dict[str, str]] = []
        for index, entry in enumerate(entries):
            path: Path = ("keychain", index)
            data = self.mapping(entry, path, frozenset({"name", "credential"}))
            name = self.text(data.get("name"), (*path, "name")) if data else None
            credential = self.text(data.get("credential"), (*path, "credential")) if data else None
            if name and credential:
                found.append({"name": name, "credential": credential})
        return found

    def workbook(self, items: Any) -> dict[str, Tool]:
        if not isinstance(items, list):
            self.error(("workbook",), f"expected a list, got {_kind(items)}")
            return {}
        tools: dict[str, Tool] = {}
        for index, item in enumerate(items):
            path: Path = ("workbook", index)
            entry = self.mapping(item, path, WORKBOOK_KEYS)
            name = self.text(entry.get("name"), (*path, "name"))
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
        name = self.text(data.get("step"), (*path, "step"))
        if "input" in data and "args" in data:
            self.error((*path, "args"), "use `input` (`args` is its legacy spelling), not both")
        step_input = data.get("input", data.get("args")) or {}
        if not isinstance(step_input, dict):
            self.error((*path, "input"), f"expected a mapping, got {_kind(step_input)}")
            step_input = {}
        self.templates(step_input, (*path, "input"))
        step_set = self.set_block(data.get("set"), (*path, "set"))
        if "tool" not in data:
            self.error((*path, "tool"), "is required (use `kind: noop` for a routing-only step)")
            tools: tuple[Tool, ...] = ()
        else:
            tools = self.tools(data["tool"], (*path, "tool"), workbook)
        next_ = self.next(data.get("next"), (*path, "next")) if "next" in data else None
        loop = self.loop(data["loop"], (*path, "loop")) if "loop" in data else None
        if name is None or not tools:
            return None
        return Step(
            name=name,
            tools=tools,
            pipeline=isinstance(data["tool"], list),
            desc=str(data.get("desc") or data.get("description") or ""),
            input=step_input,
            set=step_set,
            next=next_,
            loop=loop,
        )

    def set_block(self, value: Any, path: Path) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping of variable: value, got {_kind(value)}")
            return {}
        self.templates(value, path)
        return value

    # -- tools --------------------------------------------------------------------------

    def tools(self, raw: Any, path: Path, workbook: Mapping[str, Tool]) -> tuple[Tool, ...]:
        tools = self._tools(raw, path, workbook)
        if any(t.kind == "playbook" for t in tools) and (
            len(tools) > 1 or any(t.policy or t.set for t in tools)
        ):
            self.error(
                path,
                "a sub-playbook (kind: playbook) must be the step's only tool, without a policy"
                " or set: the server runs it, not a worker",
            )
        return tools

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
        config = {k: v for k, v in data.items() if k not in {"kind", "set", "spec"}}
        if kind != "workbook" and label is None and "name" in config:
            label = str(config.pop("name"))
        if kind == "workbook":
            target = config.get("name")
            if not _one_of(target, workbook) and path[0] != "workbook":
                self.error((*path, "name"), f"unknown workbook entry {target!r}")
        self.templates({k: v for k, v in config.items() if k not in UNRENDERED}, path)
        return Tool(
            kind=kind,
            config=config,
            name=label,
            set=self.set_block(data.get("set"), (*path, "set")),
            policy=self.policy(data.get("spec"), (*path, "spec")),
        )

    def policy(self, spec: Any, path: Path) -> tuple[Mapping[str, Any], ...]:
        if spec is None:
            return ()
        data = self.mapping(spec, path, frozenset({"policy", "timeout", "retry"}))
        policy = self.mapping(data.get("policy", {}), (*path, "policy"), frozenset({"rules"}))
        rules = policy.get("rules", [])
        if not isinstance(rules, list):
            self.error((*path, "policy", "rules"), f"expected a list, got {_kind(rules)}")
            return ()
        checked: list[Mapping[str, Any]] = []
        for index, rule in enumerate(rules):
            rule_path = (*path, "policy", "rules", index)
            entry = self.mapping(rule, rule_path, frozenset({"when", "then", "else"}))
            if "else" in entry:
                then = self.mapping(entry["else"], (*rule_path, "else"), frozenset({"then"}))
                entry = {"when": None, "then": then.get("then", {})}
                then_path: Path = (*rule_path, "else", "then")
            else:
                then_path = (*rule_path, "then")
            then = self.mapping(entry.get("then", {}), then_path, None)
            if not _one_of(then.get("do"), POLICY_ACTIONS):
                self.error(
                    (*then_path, "do"), f"expected one of {', '.join(sorted(POLICY_ACTIONS))}"
                )
            self.templates(entry, rule_path)
            checked.append(entry)
        return tuple(checked)

    # -- routing and loops --------------------------------------------------------------

    def next(self, raw: Any, path: Path) -> Next | None:
        mode = "exclusive"
        arcs_raw: Any = raw
        arcs_path = path
        if isinstance(raw, dict):
            data = self.mapping(raw, path, frozenset({"spec", "arcs"}))
            spec = self.mapping(data.get("spec", {}), (*path, "spec"), frozenset({"mode"}))
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
        result = Next(mode="inclusive" if mode == "inclusive" else "exclusive", arcs=tuple(arcs))
        self.arc_paths[id(result)] = paths
        return result

    def loop(self, raw: Any, path: Path) -> Loop | None:
        data = self.mapping(raw, path, LOOP_KEYS)
        if not data:
            return None
        if "in" not in data:
            self.error((*path, "in"), "is required (a list, a mapping, a number or a template)")
        iterator = self.text(data.get("iterator"), (*path, "iterator"))
        self.templates(data.get("in"), (*path, "in"))
        spec = self.mapping(data.get("spec", {}), (*path, "spec"), LOOP_SPEC_KEYS)
        mode = spec.get("mode", "sequential")
        if not _one_of(mode, {"sequential", "parallel"}):
            self.error((*path, "spec", "mode"), f"expected sequential or parallel, got {mode!r}")
        cap = spec.get("max_in_flight", DEFAULT_MAX_IN_FLIGHT)
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            self.error((*path, "spec", "max_in_flight"), "expected a positive integer")
            cap = DEFAULT_MAX_IN_FLIGHT
        if iterator is None or "in" not in data:
            return None
        return Loop(
            collection=data["in"],
            iterator=iterator,
            mode="parallel" if mode == "parallel" else "sequential",
            max_in_flight=cap,
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
