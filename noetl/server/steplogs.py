"""`GET /api/executions/{id}/logs`: what each command's tools printed, with python tracebacks
pointing at the playbook's lines.

Workers send each command's stdout/stderr (the last 64 KiB of each, masked) with its outcome;
they are stored in the outcome event's `payload.log`. A python traceback names the step's code
as `<python step NAME #n>` (`NAME item LABEL` for a pipeline item); where the code is inline in
the playbook, each such frame also gets the line of the playbook text it came from.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from noetl.dsl.source import load_yaml
from noetl.errors import NoetlError, NotFoundError
from noetl.store import catalog, events, executions
from noetl.tools.output import STREAMS

_FRAME = re.compile(r'(File "<python step (?P<step>.+?) #\d+>", line (?P<line>\d+))')
_CODE_KEYS = ("code", "script")


async def command_logs(
    pool: Any, execution_id: int, *, step: str | None, after: int, limit: int
) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        execution = await executions.get_execution(conn, execution_id)
        if execution is None:
            raise NotFoundError(f"execution {execution_id} does not exist")
        rows = await events.command_outputs(conn, execution_id, step=step, after=after, limit=limit)
        entry = await catalog.get_entry(conn, catalog_id=execution["catalog_id"]) if rows else None
    starts = code_starts(entry["content"]) if entry else {}
    items = []
    for row in rows:
        log = row["log"] or {}
        for stream, text in ((name, log[name]) for name in STREAMS if name in log):
            items.append(
                {
                    "event_id": str(row["event_id"]),
                    "step": row["step"],
                    "command_id": row["command_id"],
                    "iteration": row["iteration"],
                    "attempt": row["attempt"],
                    "status": row["status"],
                    "stream": stream,
                    "text": map_lines(text, starts) if stream == "stderr" else text,
                    "created_at": row["created_at"].isoformat(),
                }
            )
    return items


def map_lines(text: str, starts: dict[str, int]) -> str:
    """Add the playbook line to each traceback frame of a step whose code is inline."""

    def where(match: re.Match[str]) -> str:
        first = starts.get(match["step"])
        if first is None:
            return match[1]
        return f"{match[1]} (playbook line {first + int(match['line']) - 1})"

    return _FRAME.sub(where, text) if starts else text


@lru_cache(maxsize=128)
def code_starts(content: str) -> dict[str, int]:
    """For each step with exactly one inline python code block, the playbook line of the
    code's first line."""
    try:
        located = load_yaml(content)
    except NoetlError:
        return {}
    root = located.data if isinstance(located.data, dict) else {}
    lines = content.splitlines()
    workbook = {
        item.get("name"): ("workbook", index, "tool")
        for index, item in enumerate(root.get("workbook") or [])
        if isinstance(item, dict)
    }
    starts: dict[str, int] = {}
    for index, raw in enumerate(root.get("workflow") or []):
        if not isinstance(raw, dict) or not isinstance(raw.get("step"), str):
            continue
        found = [
            (path, tool, first)
            for path, tool in _tools(raw.get("tool"), ("workflow", index, "tool"))
            for first in _code_start(located.marks, lines, path, tool, workbook, root)
        ]
        if len(found) == 1:
            starts[raw["step"]] = found[0][2]
        for path, tool, first in found:  # a pipeline item's code is named by its label too
            starts[f"{raw['step']} item {_label(path, tool)}"] = first
    return starts


def _label(path: tuple[Any, ...], tool: dict[str, Any]) -> str:
    """The label the engine gives the tool as a pipeline item (a single tool with a policy
    runs as one): the legacy key, else its `name`, else `item<index>`. `path`: `workflow, i,
    tool[, j][, legacy label]`."""
    if len(path) > 4 or (len(path) == 4 and isinstance(path[3], str)):
        return str(path[-1])
    name = tool.get("name") if tool.get("kind") != "workbook" else None
    return str(name) if name else f"item{path[3] if len(path) == 4 else 0}"


def _tools(tool: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    if isinstance(tool, dict):
        if "kind" not in tool and len(tool) == 1:  # legacy pipeline item `- label: {kind...}`
            ((label, inner),) = tool.items()
            return _tools(inner, (*path, label))
        return [(path, tool)]
    if isinstance(tool, list):
        return [found for i, item in enumerate(tool) for found in _tools(item, (*path, i))]
    return []


def _code_start(
    marks: dict[tuple[Any, ...], tuple[int, int]],
    lines: list[str],
    path: tuple[Any, ...],
    tool: dict[str, Any],
    workbook: dict[Any, tuple[Any, ...]],
    root: dict[str, Any],
) -> list[int]:
    if tool.get("kind") == "workbook" and tool.get("name") in workbook:
        path = workbook[tool["name"]]
        entry = root["workbook"][path[1]]
        tool = entry.get("tool") if isinstance(entry.get("tool"), dict) else {}
    if tool.get("kind") != "python":
        return []
    key = next((k for k in _CODE_KEYS if isinstance(tool.get(k), str)), None)
    mark = marks.get((*path, key)) if key else None
    if mark is None:
        return []
    line, column = mark
    rest = lines[line - 1][column - 1 :].split(":", 1)[-1].lstrip() if line <= len(lines) else ""
    return [line + 1 if rest.startswith(("|", ">")) else line]
