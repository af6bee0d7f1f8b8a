"""Follow an execution's events over the API and show each step as it runs.

`noetl run`, `execute --wait` and `rerun --wait` print the same thing: each step's start and end
with its duration, policy retries as they happen (`retry 2/4 in 1.0 s: <error>`, from the
`command.retrying` events workers send), reused and skipped steps, the template problems a
step met (`payload.problems` of its `step.exit`: a `when` or `set` that failed to render), and
for a loop its done/failed counts: a progress bar per running loop on a terminal, otherwise a
plain line at most every few seconds when the counts changed (a log file or a pipe gets no
control characters). An error is shown once per step (its ✗ line; `noetl run` prints it
whole at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console

from noetl.protocol.events import StepStatus

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
PLAIN_EVERY = 5.0  # seconds between two plain progress lines of one loop
SHOWN_PROBLEMS = 3  # template problems printed per step


async def follow(
    client: httpx.AsyncClient,
    execution_id: str,
    console: Console | None,
    *,
    poll: float = 0.05,
    ended: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Print step events until the execution ends; returns the final execution view.

    The status is read before the events: a terminal status is committed with the last events,
    so once it is seen, one more read of the events shows everything. `ended`: an event set
    when the execution may have ended (`noetl run`'s own worker was told so): the next read
    comes at once instead of after `poll`."""
    after = 0
    view = StepView(console) if console is not None else None
    try:
        while True:
            if ended is not None:
                ended.clear()
            response = await client.get(f"/api/executions/{execution_id}")
            response.raise_for_status()
            execution: dict[str, Any] = response.json()
            if view is not None:  # (nothing to show: the events are not read)
                view.totals(execution)
                after = await _show_new(client, execution_id, after, view)
                view.tick()
            if execution["status"] in TERMINAL:
                return execution
            if ended is None:
                await asyncio.sleep(poll)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), poll)
    finally:
        if view is not None:
            view.close()


async def _show_new(
    client: httpx.AsyncClient, execution_id: str, after: int, view: StepView
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
            view.show(event)
        if len(items) < page:
            return after


@dataclass
class _Loop:
    done: int = 0
    failed: int = 0
    reused: int = 0
    total: int | None = None  # the loop's item count, from the execution view
    shown_at: float = 0.0  # when its last plain line was printed
    shown: str = ""  # that line (an unchanged count is not printed again)
    task: TaskID | None = None  # its bar, on a terminal

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.reused


@dataclass
class StepView:
    """Prints each step as it runs (see the module doc). `live`: progress bars (default: when
    the console is a terminal); `clock` and `every` pace the plain lines."""

    console: Console
    live: bool | None = None
    every: float = PLAIN_EVERY
    clock: Callable[[], float] = time.monotonic
    entered: dict[str, datetime] = field(default_factory=dict)
    loops: dict[str, _Loop] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)  # a failed command's attempt, if > 1
    bars: Progress | None = None

    def __post_init__(self) -> None:
        if self.live is None:
            self.live = self.console.is_terminal

    # -- events -----------------------------------------------------------------------------

    def show(self, event: dict[str, Any]) -> None:
        kind, step = event["event_type"], event["step"]
        iteration = _iteration(event.get("command_id"))
        if iteration is not None and kind in _LOOP_EVENTS:
            self.count(step, kind)
            return
        if kind == "step.enter":
            self.entered[step] = _time(event["created_at"])
            self.print(f"[cyan]▶[/] {step}")
        elif kind == "step.exit" and event["status"] == StepStatus.COMPLETED:
            summary = self.summary(step, event)
            self.print(f"[green]✓[/] {step}{summary}")
            self.problems(step, event)
        elif kind == "step.exit":  # the whole error is printed once, at the end
            summary = self.summary(step, event)
            routed = (event.get("payload") or {}).get("next") or []
            handled = f" [dim](handled: next {', '.join(routed)})[/]" if routed else ""
            self.print(f"[red]✗[/] {step}{summary}: {_short(event['error'])}{handled}")
            self.problems(step, event)
        elif kind == "command.retrying":
            where = step if iteration is None else f"{step}[{iteration}]"
            item = (event.get("payload") or {}).get("item")
            if item and item != step:
                where += f" · {item}"
            self.print(f"  [yellow]{where}: {_retry_line(event)}[/]")
        elif kind == "command.reused":
            self.print(f"[dim]↺ {step} reused from the original execution[/]")
        elif kind == "step.skipped":
            self.print(f"[dim]- {step} skipped[/]")
        elif kind == "command.failed" and (event.get("attempt") or 1) > 1:
            self.attempts[step] = int(event["attempt"])  # its error is on the step's ✗ line

    def problems(self, step: str, event: dict[str, Any]) -> None:
        """The template problems the step met (a `when` that failed to render is false, a
        `set` value that failed is skipped): why an arc did not fire, shown where it happened."""
        problems = (event.get("payload") or {}).get("problems") or []
        for problem in problems[:SHOWN_PROBLEMS]:
            self.print(f"  [yellow]⚠ {step}: {_short(str(problem))}[/]")
        if len(problems) > SHOWN_PROBLEMS:
            more = len(problems) - SHOWN_PROBLEMS
            self.print(f"  [yellow]⚠ {step}: {more} more (noetl events)[/]")

    def totals(self, execution: dict[str, Any]) -> None:
        """Each running loop's item count, from the execution view's steps."""
        for entry in execution.get("steps") or []:
            loop = entry.get("loop")
            if loop and entry.get("status") == StepStatus.RUNNING:
                self.loop(entry["step"]).total = int(loop["count"])
                self.redraw(entry["step"])

    def count(self, step: str, kind: str) -> None:
        loop = self.loop(step)
        if kind == "command.completed":
            loop.done += 1
        elif kind == "command.reused":
            loop.reused += 1
        else:
            loop.failed += 1
        self.redraw(step)

    def tick(self) -> None:
        """Plain mode: a line for each loop whose counts changed, at most every `every` s."""
        if self.live:
            return
        now = self.clock()
        for step, loop in self.loops.items():
            line = f"  {step}: {_progress(loop)}"
            if now - loop.shown_at >= self.every and line != loop.shown:
                loop.shown_at, loop.shown = now, line
                self.print(line)

    # -- the loops --------------------------------------------------------------------------

    def loop(self, step: str) -> _Loop:
        if step not in self.loops:
            self.loops[step] = _Loop(shown_at=self.clock())
        return self.loops[step]

    def redraw(self, step: str) -> None:
        if not self.live:
            return
        loop = self.loops[step]
        if self.bars is None:  # rich.progress is imported here: only a terminal shows bars
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bars = Progress(
                TextColumn("  {task.description}"),
                BarColumn(),
                TextColumn("{task.fields[counts]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.bars.start()
        if loop.task is None:
            loop.task = self.bars.add_task(step, total=loop.total, counts="")
        self.bars.update(
            loop.task, total=loop.total, completed=loop.finished, counts=_progress(loop)
        )

    def end_loop(self, step: str) -> _Loop | None:
        loop = self.loops.pop(step, None)
        if loop is not None and loop.task is not None and self.bars is not None:
            self.bars.remove_task(loop.task)
        return loop

    def close(self) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None

    # -- lines ------------------------------------------------------------------------------

    def print(self, text: str) -> None:
        """A line above the bars (rich keeps a live display below what is printed)."""
        self.console.print(text, highlight=False)

    def summary(self, step: str, event: dict[str, Any]) -> str:
        parts = []
        started = self.entered.pop(step, None)
        if started is not None:
            seconds = (_time(event["created_at"]) - started).total_seconds()
            parts.append(f"{seconds:.2f} s")
        attempt = self.attempts.pop(step, None)
        if attempt is not None:
            parts.append(f"attempt {attempt}")
        loop = self.end_loop(step)
        if loop is not None:
            parts.append(_counts(loop))
        return f" [dim]({', '.join(parts)})[/]" if parts else ""


_LOOP_EVENTS = {"command.completed", "command.failed", "command.reused"}


def _retry_line(event: dict[str, Any]) -> str:
    retry = event.get("payload") or {}
    return (
        f"retry {retry.get('try')}/{retry.get('attempts')} in {float(retry.get('delay') or 0):.1f}"
        f" s: {_short(event.get('error'))}"
    )


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


def _progress(loop: _Loop) -> str:
    of = f"/{loop.total}" if loop.total is not None else ""
    return f"{loop.finished}{of} ({_counts(loop)})"


def _iteration(command_id: str | None) -> int | None:
    if not command_id or not command_id.endswith("]"):
        return None
    index = command_id[:-1].rpartition("[")[2]
    return int(index) if index.isdigit() else None


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)
