"""Which keychain entries and stored credentials a command's templates and tools name.

Pure functions over a command's tool and input, shared by the worker (which resolves the
entries a command references, `noetl.worker.keychain`) and the server (which lets a worker read
only the credentials a held command names, `noetl.server.credential_routes`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from noetl.dsl.template import plain, render
from noetl.errors import TemplateError

_REFERENCE = re.compile(r"keychain\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*['\"]([^'\"]+)['\"]\s*\])")
_TOKEN_CALL = re.compile(r"\btoken\(\s*([^()]*?)\s*\)")


def _strings(value: Any) -> Iterator[str]:
    """The strings inside `value` (mapping values and list items, at any depth)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def token_calls(value: Any) -> set[str]:
    """The argument expressions of upstream's `token(<credential name>)` template calls."""
    return {
        match.group(1)
        for text in _strings(value)
        for match in _TOKEN_CALL.finditer(text)
        if match.group(1)
    }


def referenced(value: Any) -> set[str]:
    """Keychain entry names a value's strings reference (`keychain.x`, `keychain['x']`)."""
    return {
        match.group(1) or match.group(2)
        for text in _strings(value)
        for match in _REFERENCE.finditer(text)
    }


def needed(entries: Mapping[str, Mapping[str, Any]], roots: Iterable[str]) -> list[str]:
    """The entries to resolve for `roots`: each after the entries it references (an entry
    may reference one declared below it), otherwise in declaration order. In a cycle, the
    entry met first comes last (its template then fails naming what it lacks)."""
    position = {name: index for index, name in enumerate(entries)}
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        seen.add(name)
        deps = [dep for dep in referenced(entries[name]) if dep in entries and dep not in seen]
        for dep in sorted(deps, key=position.__getitem__):
            if dep not in seen:
                visit(dep)
        order.append(name)

    for name in sorted((n for n in set(roots) if n in entries), key=position.__getitem__):
        if name not in seen:
            visit(name)
    return order


_NAMING = ("credential", "ref", "service_account_credential")  # keychain fields naming one


def credentials_named(tool: Mapping[str, Any], tool_input: Mapping[str, Any]) -> set[str]:
    """The stored credentials a command may read: its tools' `auth` / `credential` (each side
    of a transfer, each item of a pipeline), the keychain entries its templates reference (and
    the entries those reference: `credential`, `ref`, `service_account_credential`, a noetl
    secrets `map`, a google_oauth entry's own name) and upstream's `token(<name>)` calls. The
    server lets a worker read these alone for the command (credential_routes). A templated
    name is rendered with the command's context; one that does not render names nothing."""
    context = tool_input.get("context")
    scope: Mapping[str, Any] = context if isinstance(context, Mapping) else {}
    names: set[str] = set()

    def add(value: Any, field: bool = False) -> None:
        """Add the name `value` renders to (`field`: a `name.field` reference)."""
        if isinstance(value, str) and "{{" in value:
            try:
                value = plain(render(value, scope))
            except TemplateError:
                return
        if isinstance(value, str) and value:
            names.add(value.partition(".")[0] if field else value)

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if key in ("auth", "credential") and not isinstance(item, Mapping):
                    add(item)
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(tool)
    sources = [tool.get("items"), tool_input.get("step")]
    raw = tool_input.get("keychain")
    entries = {str(k): v for k, v in raw.items() if isinstance(v, Mapping)} if raw else {}
    for name in needed(entries, referenced(sources)):
        entry = entries[name]
        for field in _NAMING:
            add(entry.get(field))
        kind = str(entry.get("kind") or entry.get("type") or "")
        if kind == "google_oauth" and not entry.get("ref") and not entry.get("credential"):
            add(name)
        if kind == "secrets" and str(entry.get("provider") or "noetl").lower() != "env":
            references = entry.get("map")
            for reference in references.values() if isinstance(references, Mapping) else ():
                add(reference, field=True)
    for expression in token_calls(sources):
        add("{{ " + expression + " }}")
    return names
