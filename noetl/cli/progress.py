"""Follow an execution's events over the API and show each step as it runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
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
    view = StepView(console) if console is not None else None
    while True:
        response = await client.get(f"/api/executions/{execution_id}")
        response.raise_for_status()
        execution: dict[str, Any] = response.json()
        after = await _show_new(client, execution_id, after, view)
        if execution["status"] in TERMINAL:
            return execution
        await asyncio.sleep(poll)


async def _show_new(
    client: httpx.AsyncClient, execution_id: str, after: int, view: StepView | None
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
            if view is not None:
                view.show(event)
        if len(items) < page:
            return after


@dataclass
class _Loop:
    done: int = 0
    failed: int = 0
    reused: int = 0


@dataclass
class StepView:
    """Prints each step as it runs: enter, exit with its duration, loop progress (a live
    counter on a terminal, a summary at the end), failed attempts, reused and skipped steps."""

    console: Console
    entered: dict[str, datetime] = field(default_factory=dict)
    loops: dict[str, _Loop] = field(default_factory=dict)
    counting: bool = False  # a live loop counter is on the current line

    def show(self, event: dict[str, Any]) -> None:
        kind, step = event["event_type"], event["step"]
        iteration = _iteration(event.get("command_id"))
        if iteration is not None and kind in _LOOP_EVENTS:
            self.count(step, kind)
            return
        self.end_counter()
        if kind == "step.enter":
            self.entered[step] = _time(event["created_at"])
            self.loops.pop(step, None)
            self.console.print(f"[cyan]▶[/] {step}", highlight=False)
        elif kind == "step.exit" and event["status"] == StepStatus.COMPLETED:
            self.console.print(f"[green]✓[/] {step}{self.summary(step, event)}", highlight=False)
        elif kind == "step.exit":  # the whole error is printed once, at the end
            self.console.print(
                f"[red]✗[/] {step}{self.summary(step, event)}: {_short(event['error'])}",
                highlight=False,
            )
        elif kind == "command.reused":
            self.console.print(f"[dim]↺ {step} reused from the original execution[/]")
        elif kind == "step.skipped":
            self.console.print(f"[dim]- {step} skipped[/]")
        elif kind == "command.failed":
            self.console.print(
                f"  [red]attempt {event['attempt']} failed:[/] {_short(event['error'])}",
                highlight=False,
            )

    def count(self, step: str, kind: str) -> None:
        loop = self.loops.setdefault(step, _Loop())
        if kind == "command.completed":
            loop.done += 1
        elif kind == "command.reused":
            loop.reused += 1
        else:
            loop.failed += 1
        if self.console.is_terminal:
            self.console.print(f"  {step}: {_counts(loop)}", end="\r", highlight=False)
            self.counting = True

    def end_counter(self) -> None:
        if self.counting:
            self.console.print(" " * 60, end="\r")
            self.counting = False

    def summary(self, step: str, event: dict[str, Any]) -> str:
        parts = []
        started = self.entered.pop(step, None)
        if started is not None:
            seconds = (_time(event["created_at"]) - started).total_seconds()
            parts.append(f"{seconds:.2f} s")
        loop = self.loops.pop(step, None)
        if loop is not None:
            parts.append(_counts(loop))
        return f" [dim]({', '.join(parts)})[/]" if parts else ""


_LOOP_EVENTS = {"command.completed", "command.failed", "command.reused"}


def _short(text: str | None, limit: int = 160) -> str:
    """The first line of an error, cut to `limit` characters."""
    lines = (text or "").strip().splitlines() or [""]
    first = lines[0]
    if len(first) > limit:
        return first[: limit - 1] + "…"
    return first + (" …" if len(lines) > 1 else "")


def _counts(loop: _Loop) -> str:
    text = f"{loop.done} done, {loop.failed} failed"
    return text + (f", {loop.reused} reused" if loop.reused else "")


def _iteration(command_id: str | None) -> int | None:
    if not command_id or not command_id.endswith("]"):
        return None
    index = command_id[:-1].rpartition("[")[2]
    return int(index) if index.isdigit() else None


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)
