"""`noetl validate` warnings: values spliced unquoted into shell or SQL text.

A `{{ expr }}` in a shell `command`/`cmds` or a SQL `query`/`command` whose value comes from
the workload, the payload, a step result or an execution variable is code the caller
controls. Upstream playbooks do this, so it is not an error; it is a warning naming the file,
line and field, with the safe way: a quoting filter (`quote`, `sql_literal`,
`sql_identifier`), `params:` for SQL or `env:` for shell.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jinja2
from jinja2 import nodes

from noetl.dsl.quoting import SAFE_FILTERS
from noetl.dsl.source import Path, load_yaml
from noetl.errors import Problem

SHELL_FIELDS = {"shell": ("command", "cmds", "cmd", "script")}
SQL_FIELDS = {
    "postgres": ("query", "command", "sql"),
    "duckdb": ("query", "command", "sql"),
}
HARMLESS_NAMES = frozenset({"execution_id", "loop_index", "keychain"})
_ENV = jinja2.Environment(autoescape=False)  # noqa: S701 - parsed only, never rendered


def splice_warnings(text: str, file: str | None = None) -> list[Problem]:
    """One warning per unquoted splice of caller-controlled data into shell or SQL text."""
    located = load_yaml(text, file)
    found: list[Problem] = []
    for path, kind, field, source in _texts(located.data):
        for expr in _unquoted(source):
            advice = (
                "`| quote`, or pass it in `env:`"
                if kind == "shell"
                else "`| sql_literal` / `| sql_identifier`, or bind it with `params:`"
            )
            found.append(
                located.problem(
                    path,
                    f"{kind} {field} splices {{{{ {expr} }}}} unquoted: a value from the payload"
                    f" or a step result becomes code; use {advice} (docs/security.md)",
                )
            )
    return found


def _texts(root: Any) -> Iterator[tuple[Path, str, str, str]]:
    """(path, tool kind, field, template text) of every shell/SQL text in the playbook."""
    if not isinstance(root, dict):
        return
    tools: list[tuple[Path, Any]] = []
    for index, step in enumerate(root.get("workflow") or []):
        if isinstance(step, dict):
            tools.append((("workflow", index, "tool"), step.get("tool")))
    for index, item in enumerate(root.get("workbook") or []):
        if isinstance(item, dict):
            tools.append((("workbook", index, "tool"), item.get("tool")))
    for path, tool in tools:
        for item_path, item in _items(path, tool):
            kind = str(item.get("kind", ""))
            fields = SHELL_FIELDS.get(kind) or SQL_FIELDS.get(kind) or ()
            label = "shell" if kind in SHELL_FIELDS else "SQL"
            for field in fields:
                value = item.get(field)
                texts = value if isinstance(value, list) else [value]
                for position, source in enumerate(texts):
                    if isinstance(source, str) and "{{" in source:
                        where = (*item_path, field) + (
                            (position,) if isinstance(value, list) else ()
                        )
                        yield where, label, field, source


def _items(path: Path, tool: Any) -> Iterator[tuple[Path, dict[str, Any]]]:
    if isinstance(tool, dict):
        yield path, tool
    elif isinstance(tool, list):  # a pipeline: `- name: x, kind: ...` or `- x: {kind: ...}`
        for index, item in enumerate(tool):
            if not isinstance(item, dict):
                continue
            if "kind" in item:
                yield (*path, index), item
            elif len(item) == 1:
                [(label, inner)] = item.items()
                if isinstance(inner, dict):
                    yield (*path, index, label), inner


def _unquoted(source: str) -> Iterator[str]:
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError:
        return  # reported as an error by the parser
    for output in tree.find_all(nodes.Output):
        for node in output.nodes:
            if isinstance(node, nodes.TemplateData) or _safe(node):
                continue
            found = [node, *node.find_all(nodes.Name)]
            names = {n.name for n in found if isinstance(n, nodes.Name) and n.ctx == "load"}
            if names - HARMLESS_NAMES:
                yield _shown(source, node)


def _safe(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Filter):
        return node.name in SAFE_FILTERS
    return isinstance(node, nodes.Const | nodes.Compare | nodes.Test | nodes.Not)


def _shown(source: str, node: nodes.Node) -> str:
    """The spliced expression, as written (near enough) for the warning."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{_shown(source, node.node)}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return f"{_shown(source, node.node)}[{node.arg.value!r}]"
    if isinstance(node, nodes.Filter) and node.node is not None:
        return f"{_shown(source, node.node)} | {node.name}"
    names = sorted({n.name for n in node.find_all(nodes.Name)})
    return f"<expression of {', '.join(names)}>"
