"""Sub-playbooks (`kind: playbook`): what the server does with these commands itself.

The parent's command is claimed by the server (no lease: no worker or relay takes it) and a
child execution starts in the same transaction, with `parent_execution_id` and
`parent_command_id`. No worker slot waits for the child. When the child ends, the parent's
command completes with the child's result (or `return_step`'s) or fails with its error; when
a parent ends first, its running children are cancelled. This module says what to write;
`noetl.server.flow` writes it (`Flow._start_child`, `Flow.settle`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from noetl.errors import NoetlError
from noetl.protocol.events import CommandStatus, EventType, ExecutionStatus
from noetl.protocol.outcome import Outcome, Report
from noetl.protocol.records import CommandRecord, EventRecord
from noetl.server.records import SERVER_WORKER
from noetl.tools.base import ToolError, timeout_seconds

MAX_DEPTH = 32  # sub-playbooks started within one transaction (a playbook calling itself)


@dataclass(frozen=True)
class ChildRequest:
    """The catalog entry a `kind: playbook` command names."""

    path: str | None
    catalog_id: int | None
    version: int | None


def _int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def child_request(command: CommandRecord, depth: int) -> ChildRequest:
    """Raises NoetlError past MAX_DEPTH nested starts, ValueError for a malformed id."""
    if depth >= MAX_DEPTH:
        raise NoetlError(f"more than {MAX_DEPTH} nested sub-playbooks: a playbook calling itself?")
    tool = command.tool
    return ChildRequest(
        path=tool.get("path"),
        catalog_id=_int(tool.get("catalog_id")),
        version=_int(tool.get("version")),
    )


MAX_TIMEOUT = 1e9  # seconds (~31 years): the deadline stays a timestamp PostgreSQL can store


def child_timeout(command: CommandRecord) -> float | None:
    """The child's time limit: the tool's `timeout_seconds` (alias `timeout`), None when it
    sets none. NoetlError for a value that is not a positive number, or over MAX_TIMEOUT (a
    template may make it: the step then fails before a child starts)."""
    if command.tool.get("timeout_seconds", command.tool.get("timeout")) is None:
        return None
    try:
        seconds = timeout_seconds(command.tool, 0.0)
    except ToolError as exc:
        raise NoetlError(str(exc)) from None
    if seconds > MAX_TIMEOUT:
        raise NoetlError(f"timeout_seconds must be at most {MAX_TIMEOUT:.0f}, got {seconds:g}")
    return seconds


def child_input(command: CommandRecord) -> dict[str, Any]:
    """The child's payload: the command's input over upstream's `payload:` spelling of it."""
    payload = command.tool.get("payload")
    return {**(payload if isinstance(payload, dict) else {}), **command.input}


def claimed(command: CommandRecord, event_id: int) -> EventRecord:
    """The server's `command.claimed` for a sub-playbook command."""
    return EventRecord(
        command.execution_id,
        event_id,
        EventType.COMMAND_CLAIMED,
        step=command.step,
        command_id=command.command_id,
        attempt=1,
        worker_id=SERVER_WORKER,
        status=CommandStatus.CLAIMED.value,
    )


def _waiting(parent_command: dict[str, Any] | None) -> bool:
    """The parent's command still waits for its child (the server holds it)."""
    return (
        parent_command is not None
        and parent_command["status"] == CommandStatus.CLAIMED
        and parent_command["worker_id"] == SERVER_WORKER
    )


def returned_step(child: dict[str, Any], parent_command: dict[str, Any] | None) -> str | None:
    """The step whose result an ended child returns to its waiting parent (`return_step`),
    or None (it returns its own result, or tells nothing): only then is its snapshot read."""
    if not _waiting(parent_command) or child["status"] != ExecutionStatus.COMPLETED:
        return None
    assert parent_command is not None
    step = parent_command["tool"].get("return_step")
    return str(step) if step else None


def parent_report(child: dict[str, Any], parent_command: dict[str, Any] | None) -> Report | None:
    """The outcome an ended child gives its parent's command (None: nothing to tell). With a
    `returned_step`, `child` has its resolved `state`."""
    if not _waiting(parent_command):
        return None
    if child["status"] == ExecutionStatus.COMPLETED:
        step = returned_step(child, parent_command)
        if step is None:
            outcome = Outcome.success(child["result"])
        else:
            results = (child.get("state") or {}).get("results") or {}
            outcome = Outcome.success(results.get(step))
    else:
        outcome = Outcome.failure(
            f"sub-playbook {child['path']} (execution {child['execution_id']}) "
            f"{child['status'].lower()}: {child['error']}"
        )
    return Report(
        child["parent_execution_id"], child["parent_command_id"], 1, SERVER_WORKER, outcome
    )
