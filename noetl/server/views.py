"""Rows → JSON the API returns. Ids become strings (browsers lose 64-bit integers)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from noetl.engine import ExecutionState


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def execution_summary(row: dict[str, Any]) -> dict[str, Any]:
    created, ended = row["created_at"], row["ended_at"]
    return {
        "execution_id": str(row["execution_id"]),
        "path": row["path"],
        "version": row["version"],
        "catalog_id": str(row["catalog_id"]),
        "parent_execution_id": _id(row["parent_execution_id"]),
        "parent_command_id": row.get("parent_command_id"),
        "status": row["status"],
        "created_at": _iso(created),
        "ended_at": _iso(ended),
        "duration_seconds": (ended - created).total_seconds() if ended else None,
        "result": row["result"],
        "error": row["error"],
        "rerun_of": _id(row.get("rerun_of")),
        "schedule_id": _id(row.get("schedule_id")),
        "deadline": _iso(row.get("deadline")),  # its time limit's end; None: no limit
    }


def execution_detail(row: dict[str, Any]) -> dict[str, Any]:
    state = row["state"] or {}
    steps = []
    for name, step in state.get("steps", {}).items():
        entry = {"step": name, "status": step["status"], "runs": step["runs"]}
        loop = step.get("loop")
        if loop:
            entry["loop"] = {
                "count": loop["count"],
                "succeeded": loop["succeeded"],
                "failed": loop["failed"],
                "in_flight": loop["in_flight"],
            }
        steps.append(entry)
    return {
        **execution_summary(row),
        "steps": steps,
        "pending_commands": sorted(state.get("commands", {})),
        "variables": state.get("variables", {}),
    }


def detail_state(state: ExecutionState) -> dict[str, Any]:
    """The parts of a snapshot `execution_detail` shows, from the engine's state: its step
    entries as the snapshot writes them (a state held by the server keeps them as JSON, so
    a poll parses none of them)."""
    return {
        "steps": state.step_states.to_json(),
        "commands": state.commands,
        "variables": state.variables,
    }


def event(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": str(row["event_id"]),
        "execution_id": str(row["execution_id"]),
        "parent_event_id": _id(row["parent_event_id"]),
        "parent_execution_id": _id(row["parent_execution_id"]),
        "event_type": row["event_type"],
        "step": row["step"],
        "command_id": row["command_id"],
        "attempt": row["attempt"],
        "worker_id": row["worker_id"],
        "status": row["status"],
        "payload": row["payload"],
        "result": row["result"],
        "error": row["error"],
        "duration": row["duration"],
        "created_at": _iso(row["created_at"]),
    }


def catalog_entry(row: dict[str, Any]) -> dict[str, Any]:
    entry = {
        "catalog_id": str(row["catalog_id"]),
        "path": row["path"],
        "version": row["version"],
        "name": row["name"],
        "created_at": _iso(row["created_at"]),
    }
    if "created" in row:
        entry["created"] = row["created"]
    return entry


def _id(value: int | None) -> str | None:
    return None if value is None else str(value)
