"""Listing and housekeeping commands: executions, catalog, workers, credentials."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from noetl.cli.connection import check, client, fail
from noetl.config import Settings

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 250)  # pipes get whole ids

catalog_app = typer.Typer(help="Registered playbooks.", no_args_is_help=True)
credentials_app = typer.Typer(help="Named secrets (data encrypted at rest).", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON")]


def settings() -> Settings:
    from noetl.errors import ConfigError

    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None


def _get(route: str, **params: Any) -> dict[str, Any]:
    with client(settings()) as api:
        return check(api.get(route, params={k: v for k, v in params.items() if v is not None}))


def when(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def table_of(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def executions(
    status: Annotated[
        str | None, typer.Option(help="RUNNING, COMPLETED, FAILED or CANCELLED")
    ] = None,
    path: Annotated[str | None, typer.Option(help="Only paths containing this text")] = None,
    schedule: Annotated[
        str | None, typer.Option("--schedule", help="Only executions this schedule started")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List recent executions, newest first."""
    status = status.upper() if status else None
    body = _get(
        "/api/executions", status=status, path=path, schedule=schedule, limit=limit, brief="true"
    )
    if as_json:
        print(json.dumps(body["items"], indent=2))
        return
    table = table_of("execution", "status", "path", "version", "started", "seconds", "started by")
    for item in body["items"]:
        seconds = item.get("duration_seconds")
        table.add_row(
            item["execution_id"],
            item["status"],
            item["path"],
            str(item["version"]),
            when(item["created_at"]),
            "" if seconds is None else f"{seconds:.2f}",
            started_by(item),
        )
    out.print(table)
    if not body["items"]:
        out.print("no execution matches" if status or path or schedule else "no executions yet")


def started_by(execution: dict[str, Any]) -> str:
    """What started an execution other than a user: a re-run, a schedule or a parent."""
    for key, what in (
        ("rerun_of", "re-run of"),
        ("schedule_id", "schedule"),
        ("parent_execution_id", "parent"),
    ):
        if execution.get(key):
            return f"{what} {execution[key]}"
    return ""


def workers(as_json: JsonOption = False) -> None:
    """List the workers that reported to the server, with their last heartbeat."""
    items = _get("/api/workers")["items"]
    if as_json:
        print(json.dumps(items, indent=2))
        return
    table = table_of("worker", "status", "host", "slots", "running", "last heartbeat")
    for item in items:
        table.add_row(
            item["worker_id"],
            item["status"],
            item.get("hostname") or "",
            str(item.get("concurrency") or ""),
            str(item.get("running") or 0),
            when(item["heartbeat_at"]),
        )
    out.print(table)


@catalog_app.command("list")
def catalog_list(as_json: JsonOption = False) -> None:
    """The latest version of every registered playbook."""
    items = _get("/api/catalog")["items"]
    if as_json:
        print(json.dumps(items, indent=2))
        return
    table = table_of("path", "version", "name", "registered", "catalog_id")
    for item in items:
        table.add_row(
            item["path"],
            str(item["version"]),
            item["name"],
            when(item["created_at"]),
            item["catalog_id"],
        )
    out.print(table)


@catalog_app.command("show")
def catalog_show(
    path: Annotated[str, typer.Argument(help="Catalog path")],
    version: Annotated[int | None, typer.Option(help="Version (default: the latest)")] = None,
    versions: Annotated[bool, typer.Option("--versions", help="List the versions only")] = False,
) -> None:
    """Print a registered playbook's YAML (or its versions)."""
    items = _get("/api/catalog/versions", path=path)["items"]
    if versions:
        for item in items:
            out.print(
                f"{item['version']:>4}  {when(item['created_at'])}  {item['catalog_id']}",
                highlight=False,
            )
        return
    chosen = [i for i in items if version is None or i["version"] == version]
    if not chosen:
        known = ", ".join(str(i["version"]) for i in items)
        raise fail(f"{path} has no version {version} (versions: {known})")
    latest = max(chosen, key=lambda item: int(item["version"]))
    entry = _get(f"/api/catalog/{latest['catalog_id']}")
    out.print(f"# {entry['path']} version {entry['version']}", style="dim", highlight=False)
    out.out(entry["content"].rstrip("\n"), highlight=False)


@credentials_app.command("list")
def credentials_list(as_json: JsonOption = False) -> None:
    """Credential names, types and descriptions (never their data)."""
    items = _get("/api/credentials")["items"]
    if as_json:
        print(json.dumps(items, indent=2))
        return
    table = table_of("name", "type", "description", "tags")
    for item in items:
        table.add_row(
            item["name"], item["type"], item.get("description") or "", ", ".join(item["tags"])
        )
    out.print(table)


@credentials_app.command("add")
def credentials_add(
    name: Annotated[str, typer.Argument(help="Credential name (letters, digits, _ . -)")],
    type_: Annotated[str, typer.Option("--type", help="postgres, http, bearer, ...")],
    data: Annotated[
        str | None, typer.Option("--data", help="The secret fields as a JSON object")
    ] = None,
    field: Annotated[
        list[str] | None, typer.Option("--field", help="key=value secret field (repeatable)")
    ] = None,
    description: Annotated[str, typer.Option(help="What it is for")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable)")] = None,
) -> None:
    """Store (or replace) a credential; its data is encrypted by the server."""
    values: dict[str, Any] = {}
    if data:
        try:
            values = json.loads(data)
        except json.JSONDecodeError as exc:
            raise fail(f"--data is not JSON: {exc}") from None
        if not isinstance(values, dict):
            raise fail("--data must be a JSON object")
    for item in field or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"--field expects key=value, got {item!r}")
        values[key] = value
    if not values:
        raise fail("give the secret with --data JSON or --field key=value")
    body = {
        "name": name,
        "type": type_,
        "data": values,
        "description": description,
        "tags": tag or [],
    }
    with client(settings()) as api:
        check(api.post("/api/credentials", json=body))
    out.print(f"credential {name} stored ({len(values)} field(s))", highlight=False)


@credentials_app.command("remove")
def credentials_remove(name: Annotated[str, typer.Argument(help="Credential name")]) -> None:
    """Delete a credential."""
    with client(settings()) as api:
        check(api.delete(f"/api/credentials/{name}"))
    out.print(f"credential {name} removed", highlight=False)
