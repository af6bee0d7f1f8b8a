"""Follow an execution's events over the API and show each step as it runs."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from rich.console import Console

from noetl.protocol.events import StepStatus

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


async def follow(
    client: httpx.AsyncClient, execution_id: str, console: Console | None, *, poll: float = 0.05
) -> dict[str, Any]:
    """Print step events until the execution ends; returns the final execution view.

    The status is read before the events: a terminal status is committed with the last events,
    so once it is seen, one more read of the events shows everything."""
    after = 0
    while True:
        response = await client.get(f"/api/executions/{execution_id}")
        response.raise_for_status()
        execution: dict[str, Any] = response.json()
        after = await _show_new(client, execution_id, after, console)
        if execution["status"] in TERMINAL:
            return execution
        await asyncio.sleep(poll)


async def _show_new(
    client: httpx.AsyncClient, execution_id: str, after: int, console: Console | None
) -> int:
    page = 1000
    while True:
        response = await client.get(
            f"/api/executions/{execution_id}/events", params={"after": after, "limit": page}
        )
        response.raise_for_status()
        items = response.json()["items"]
        for event in items:
            after = int(event["event_id"])
            if console is not None:
                show(console, event)
        if len(items) < page:
            return after


def show(console: Console, event: dict[str, Any]) -> None:
    kind, step = event["event_type"], event["step"]
    if kind == "step.enter":
        console.print(f"[cyan]▶[/] {step}")
    elif kind == "step.exit" and event["status"] == StepStatus.COMPLETED:
        console.print(f"[green]✓[/] {step}")
    elif kind == "step.exit":
        console.print(f"[red]✗[/] {step}: {event['error']}")
    elif kind == "command.reused" and (event.get("payload") or {}).get("iteration") is None:
        console.print(f"[dim]↺ {step} reused from the original execution[/]")
    elif kind == "step.skipped":
        console.print(f"[dim]- {step} skipped[/]")
    elif kind == "command.failed":
        console.print(
            f"  [red]{event['command_id']} attempt {event['attempt']}:[/] {event['error']}"
        )
