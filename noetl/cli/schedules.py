"""`noetl schedule add|list|remove|pause|resume`: playbooks started on a cron or an interval."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from noetl.cli.admin import JsonOption, out, settings, table_of, when
from noetl.cli.connection import check, client, fail

schedule_app = typer.Typer(
    help="Start registered playbooks on a cron expression or an interval.", no_args_is_help=True
)


def _call(method: str, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    with client(settings()) as api:
        return check(api.request(method, route, json=body))


def _describe(item: dict[str, Any]) -> str:
    if item["cron"]:
        return f"cron {item['cron']} ({item['timezone']})"
    return f"every {item['every_seconds']:g} s"


@schedule_app.command("add")
def add(
    path: Annotated[str, typer.Argument(help="Catalog path of a registered playbook")],
    cron: Annotated[str | None, typer.Option(help="Cron expression, e.g. '*/5 * * * *'")] = None,
    every: Annotated[str | None, typer.Option(help="Interval, e.g. 30s, 5m, 1h")] = None,
    payload: Annotated[
        str | None, typer.Option(help="JSON object merged over the workload")
    ] = None,
    timezone: Annotated[str, typer.Option(help="IANA zone the cron is read in")] = "UTC",
    version: Annotated[int | None, typer.Option(help="Catalog version (default: latest)")] = None,
    overlap: Annotated[
        str, typer.Option(help="skip (no new run while one runs) or allow")
    ] = "skip",
    catch_up: Annotated[
        bool, typer.Option("--catch-up", help="Fire ticks missed while no server ran")
    ] = False,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused")] = False,
) -> None:
    """Add a schedule (give --cron or --every)."""
    if (cron is None) == (every is None):
        raise fail("give --cron EXPR or --every INTERVAL")
    data: Any = {}
    if payload:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise fail(f"--payload is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise fail("--payload must be a JSON object")
    body = {
        "path": path,
        "version": version,
        "cron": cron,
        "every": every,
        "payload": data,
        "timezone": timezone,
        "overlap": overlap,
        "catch_up": catch_up,
        "enabled": not paused,
    }
    created = _call("POST", "/api/schedules", body)
    out.print(
        f"schedule {created['schedule_id']}: {path} {_describe(created)};"
        f" next {when(created['next_fire_at']) or 'paused'}",
        highlight=False,
    )


@schedule_app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """Every schedule with its next tick and last execution."""
    items = _call("GET", "/api/schedules")["items"]
    if as_json:
        print(json.dumps(items, indent=2))
        return
    table = table_of("schedule", "path", "when", "overlap", "next", "last execution")
    for item in items:
        table.add_row(
            item["schedule_id"],
            item["path"],
            _describe(item),
            item["overlap"],
            when(item["next_fire_at"]) or "paused",
            item["last_execution_id"] or "",
        )
    out.print(table)


@schedule_app.command("remove")
def remove(schedule_id: Annotated[str, typer.Argument()]) -> None:
    """Delete a schedule (its executions stay)."""
    _call("DELETE", f"/api/schedules/{schedule_id}")
    out.print(f"schedule {schedule_id} removed", highlight=False)


@schedule_app.command("pause")
def pause(schedule_id: Annotated[str, typer.Argument()]) -> None:
    """Stop firing until resumed."""
    _call("POST", f"/api/schedules/{schedule_id}/pause")
    out.print(f"schedule {schedule_id} paused", highlight=False)


@schedule_app.command("resume")
def resume(schedule_id: Annotated[str, typer.Argument()]) -> None:
    """Fire again; ticks that passed while paused are not fired."""
    item = _call("POST", f"/api/schedules/{schedule_id}/resume")
    out.print(f"schedule {schedule_id} resumed; next {when(item['next_fire_at'])}", highlight=False)
