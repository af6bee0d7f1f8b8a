"""`POST /api/executions/{id}/rerun`: a new execution that restarts where the original failed.

What is reused and what runs fresh is the engine's rule (`noetl.engine.rerun`); here the
original's state and completed commands are read and the new execution is started on the same
catalog version (or the one asked for) in one transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from noetl.engine import ExecutionState
from noetl.engine.rerun import Recorded, plan
from noetl.errors import ConflictError, NotFoundError
from noetl.protocol.events import ExecutionStatus
from noetl.server import snapshots
from noetl.server.records import Effects
from noetl.store import catalog, events, executions, loops

if TYPE_CHECKING:
    from noetl.server.service import Orchestrator


async def rerun(
    server: Orchestrator,
    execution_id: int,
    *,
    from_step: str | None = None,
    payload: dict[str, Any] | None = None,
    version: int | str | None = None,
) -> dict[str, Any]:
    """Start the re-run; returns the new execution's id with what it restarts and reuses."""
    async with server.pool.connection() as conn:
        row = await executions.get_execution(conn, execution_id)
        if row is None:
            raise NotFoundError(f"execution {execution_id} does not exist")
        if row["status"] == ExecutionStatus.RUNNING:
            raise ConflictError(f"execution {execution_id} is still running; cancel it first")
        if version is None:
            entry = await catalog.get_entry(conn, catalog_id=row["catalog_id"], content=False)
        else:
            wanted = None if version == "latest" else int(version)
            entry = await catalog.get_entry(conn, path=row["path"], version=wanted, content=False)
            if entry is None:
                raise NotFoundError(f"playbook {row['path']!r} version {version} is not registered")
        completed = await events.completed_commands(conn, execution_id)
        original = ExecutionState.from_json(await snapshots.resolved(conn, row["state"]))
        items: dict[tuple[str, int], list[Any]] = {}
        for name, step in original.steps.items():
            if step.loop is not None and step.loop.stored:
                found = await loops.items(conn, execution_id, name, step.runs)
                if found is not None:
                    items[(name, step.runs)] = found
    assert entry is not None  # an execution's catalog entry is never deleted
    playbook = await server.playbook(entry["catalog_id"])
    prefix = f"{execution_id}:"
    recorded = [
        Recorded(
            str(event["command_id"]).removeprefix(prefix),
            event["step"],
            event["result"],
            (event["payload"] or {}).get("variables"),
        )
        for event in completed
    ]
    chosen = plan(playbook, original, recorded, from_step=from_step, items=items)
    effects = Effects()
    async with server.flow.transaction() as conn:
        new_id = await server.flow.start(
            conn,
            entry,
            {**original.workload, **(payload or {})},
            effects,
            rerun=(execution_id, chosen),
        )
    await server.flow.after_commit(effects)
    return {
        "execution_id": str(new_id),
        "rerun_of": str(execution_id),
        "path": entry["path"],
        "version": entry["version"],
        "catalog_id": str(entry["catalog_id"]),
        "status": "RUNNING",
        "restart": list(chosen.restart),
        "reused": sorted({r.step for r in recorded if r.key in chosen.reuse}),
    }
