"""Sub-playbooks (`kind: playbook`): the server runs these commands itself.

The parent's command is claimed by the server (no lease: no worker or relay takes it) and a
child execution starts in the same transaction, with `parent_execution_id` and
`parent_command_id`. No worker slot waits for the child. When the child ends, the parent's
command completes with the child's result (or `return_step`'s) or fails with its error; when
a parent ends first, its running children are cancelled. `settle` does both and the relay calls
it again for anything a crash left between two transactions.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import psycopg

from noetl.errors import ConflictError, NoetlError, NotFoundError
from noetl.protocol.events import CommandStatus, EventType
from noetl.protocol.outcome import Outcome, Report
from noetl.protocol.records import CommandRecord, EventRecord
from noetl.server.records import SERVER_WORKER, Effects
from noetl.store import commands, events, executions

if TYPE_CHECKING:
    from noetl.server.service import Orchestrator

log = logging.getLogger(__name__)

MAX_DEPTH = 32  # sub-playbooks started within one transaction (a playbook calling itself)


def _int(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


async def start_child(
    orchestrator: Orchestrator,
    conn: psycopg.AsyncConnection[Any],
    command: CommandRecord,
    effects: Effects,
    depth: int,
) -> None:
    await commands.claim_for_server(conn, command.execution_id, [command.command_id], SERVER_WORKER)
    claimed = EventRecord(
        command.execution_id,
        orchestrator.new_id(),
        EventType.COMMAND_CLAIMED,
        step=command.step,
        command_id=command.command_id,
        attempt=1,
        worker_id=SERVER_WORKER,
        status=CommandStatus.CLAIMED.value,
    )
    await events.insert_events(conn, [claimed])
    tool = command.tool
    try:
        if depth >= MAX_DEPTH:
            raise NoetlError(
                f"more than {MAX_DEPTH} nested sub-playbooks: a playbook calling itself?"
            )
        entry = await orchestrator.resolve(
            path=tool.get("path"),
            catalog_id=_int(tool.get("catalog_id")),
            version=_int(tool.get("version")),
        )
        await orchestrator.start(
            conn,
            entry,
            dict(command.input),
            effects,
            parent_execution_id=command.execution_id,
            parent_command_id=command.command_id,
            depth=depth + 1,
        )
    except (NoetlError, ValueError) as exc:
        effects.reports.append(
            Report(
                command.execution_id,
                command.command_id,
                1,
                SERVER_WORKER,
                Outcome.failure(f"sub-playbook: {exc}"),
            )
        )


async def settle(orchestrator: Orchestrator, execution_id: int) -> None:
    """Tell the parent of an ended child; cancel the running children of an ended parent."""
    async with orchestrator.pool.connection() as conn:
        row = await executions.get_execution(conn, execution_id)
        if row is None or row["status"] == "RUNNING":
            return
        parent_command = None
        if row["parent_command_id"]:
            parent_command = await commands.get_by_command_id(
                conn, row["parent_execution_id"], row["parent_command_id"]
            )
        children = await executions.running_children(conn, execution_id)
    if (
        parent_command
        and parent_command["status"] == "CLAIMED"
        and (parent_command["worker_id"] == SERVER_WORKER)
    ):
        return_step = parent_command["tool"].get("return_step")
        ok = row["status"] == "COMPLETED"
        result = (
            (row["state"].get("results") or {}).get(return_step) if return_step else row["result"]
        )
        outcome = (
            Outcome.success(result)
            if ok
            else Outcome.failure(
                f"sub-playbook {row['path']} (execution {execution_id}) "
                f"{row['status'].lower()}: {row['error']}"
            )
        )
        report = Report(
            row["parent_execution_id"], row["parent_command_id"], 1, SERVER_WORKER, outcome
        )
        try:
            await orchestrator.report(report)
        except (ConflictError, NotFoundError) as exc:
            log.info("parent of %s not told: %s", execution_id, exc)
    for child in children:
        with contextlib.suppress(ConflictError):  # it ended meanwhile
            await orchestrator.cancel(child, f"parent execution {execution_id} {row['status']}")
