"""What `noetl run` prints while it follows an execution (noetl.cli.progress.StepView): retries
as they happen, loop counts as plain periodic lines off a terminal and as bars on one; and what
the follow reads (`--json` shows no step: it reads no events)."""

from __future__ import annotations

import io
from typing import Any

import httpx
from rich.console import Console

from noetl.cli.progress import StepView, follow


def _event(kind: str, step: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_type": kind,
        "step": step,
        "command_id": fields.pop("command_id", None),
        "status": fields.pop("status", None),
        "error": fields.pop("error", None),
        "attempt": fields.pop("attempt", 1),
        "payload": fields.pop("payload", None),
        "created_at": fields.pop("created_at", "2026-11-30T10:00:00+00:00"),
    }


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _plain() -> tuple[StepView, io.StringIO, Clock]:
    text = io.StringIO()
    clock = Clock()
    console = Console(file=text, force_terminal=False, width=200)
    return StepView(console, clock=clock), text, clock


def test_a_retry_is_one_line_naming_the_try_the_delay_and_the_error() -> None:
    view, text, _ = _plain()
    retry = {"item": "flaky", "try": 2, "attempts": 4, "delay": 1.0, "error": "boom"}
    view.show(_event("step.enter", "fetch"))
    view.show(
        _event("command.retrying", "fetch", command_id="fetch#1", error="boom\nmore", payload=retry)
    )
    view.show(
        _event(
            "command.retrying",
            "fetch",
            command_id="fetch#1[3]",
            error="boom",
            payload={**retry, "item": "fetch", "try": 3},
        )
    )
    assert text.getvalue().splitlines() == [
        "▶ fetch",
        "  fetch · flaky: retry 2/4 in 1.0 s: boom …",
        "  fetch[3]: retry 3/4 in 1.0 s: boom",
    ]


def test_off_a_terminal_a_loop_prints_a_plain_line_every_few_seconds() -> None:
    view, text, clock = _plain()
    view.show(_event("step.enter", "measure"))
    view.totals({"steps": [{"step": "measure", "status": "running", "loop": {"count": 10}}]})
    for index in range(3):
        view.show(_event("command.completed", "measure", command_id=f"measure#1[{index}]"))
    view.tick()  # less than `every` seconds: nothing yet
    clock.now += 5
    view.show(_event("command.failed", "measure", command_id="measure#1[3]", error="x"))
    view.tick()
    clock.now += 1
    view.tick()
    view.show(
        _event(
            "step.exit",
            "measure",
            status="failed",
            error="step 'measure' failed",
            created_at="2026-11-30T10:00:02.5+00:00",
        )
    )
    assert text.getvalue().splitlines() == [
        "▶ measure",
        "  measure: 4/10 (3 done, 1 failed)",
        "✗ measure (2.50 s, 3 done, 1 failed): step 'measure' failed",
    ]
    assert "\x1b" not in text.getvalue() and "\r" not in text.getvalue()
    clock.now += 10
    view.tick()  # the loop has ended: no more lines
    assert text.getvalue().count("measure:") == 1


def test_on_a_terminal_a_loop_has_a_bar_with_its_counts_and_the_lines_stay() -> None:
    text = io.StringIO()
    console = Console(file=text, force_terminal=True, width=100)
    view = StepView(console)
    view.show(_event("step.enter", "measure"))
    view.totals({"steps": [{"step": "measure", "status": "running", "loop": {"count": 4}}]})
    view.show(_event("command.completed", "measure", command_id="measure#1[0]"))
    view.show(_event("command.failed", "measure", command_id="measure#1[1]", error="x"))
    assert view.bars is not None
    [task] = view.bars.tasks
    assert (task.completed, task.total) == (2, 4)
    assert task.fields["counts"] == "2/4 (1 done, 1 failed)"
    view.show(_event("step.exit", "measure", status="completed"))
    assert view.bars.tasks == []
    view.close()
    shown = text.getvalue()
    assert "measure" in shown and "1 done, 1 failed" in shown


def test_a_failed_step_shows_its_error_once_and_a_loop_line_only_when_counts_change() -> None:
    view, text, clock = _plain()
    body = "GET http://h/x returned HTTP 404: <html>\n<body>not found</body>\n</html>"
    view.show(_event("step.enter", "fetch"))
    view.show(_event("command.failed", "fetch", command_id="e:fetch", error=body))
    view.show(_event("step.exit", "fetch", status="failed", error=body))
    view.show(_event("step.enter", "call"))
    view.show(_event("command.failed", "call", command_id="e:call", error="lost", attempt=2))
    view.show(
        _event("step.exit", "call", status="failed", error="lost", payload={"next": ["cleanup"]})
    )
    view.show(_event("step.enter", "each"))
    view.show(_event("command.completed", "each", command_id="e:each[0]"))
    for _ in range(3):  # a slow loop whose counts do not move
        clock.now += 6
        view.tick()
    assert text.getvalue().splitlines() == [
        "▶ fetch",
        "✗ fetch (0.00 s): GET http://h/x returned HTTP 404: <html> …",
        "▶ call",
        "✗ call (0.00 s, attempt 2): lost (handled: next cleanup)",
        "▶ each",
        "  each: 1 (1 done, 0 failed)",
    ]


def test_a_steps_template_problems_are_shown_under_it_a_few_at_most() -> None:
    """Why an arc did not fire (its `when` failed to render) is on the screen, not only in
    the step.exit event."""
    view, text, _ = _plain()
    why = ["arc to three: ZeroDivisionError: division by zero in '{{ 1 / 0 }}'\nmore"]
    view.show(_event("step.exit", "two", status="completed", payload={"problems": why}))
    many = [f"set x{n}: 'y' is undefined" for n in range(5)]
    view.show(
        _event("step.exit", "four", status="failed", error="boom", payload={"problems": many})
    )
    assert text.getvalue().splitlines() == [
        "✓ two",
        "  ⚠ two: arc to three: ZeroDivisionError: division by zero in '{{ 1 / 0 }}' …",
        "✗ four: boom",
        "  ⚠ four: set x0: 'y' is undefined",
        "  ⚠ four: set x1: 'y' is undefined",
        "  ⚠ four: set x2: 'y' is undefined",
        "  ⚠ four: 2 more (noetl events)",
    ]


def _api(requested: list[str]) -> httpx.AsyncClient:
    """An API whose execution is RUNNING at the first read and COMPLETED after."""
    reads = {"execution": 0}

    def answer(request: httpx.Request) -> httpx.Response:
        requested.append(request.url.path)
        if request.url.path.endswith("/events"):
            after = int(request.url.params.get("after", 0))
            items = [_event("step.enter", "start")] if after == 0 else []
            return httpx.Response(200, json={"items": [{**e, "event_id": "1"} for e in items]})
        reads["execution"] += 1
        status = "RUNNING" if reads["execution"] == 1 else "COMPLETED"
        return httpx.Response(200, json={"execution_id": "7", "status": status})

    return httpx.AsyncClient(base_url="http://api", transport=httpx.MockTransport(answer))


async def test_the_follow_reads_events_only_to_show_them() -> None:
    shown: list[str] = []
    async with _api(shown) as api:
        console = Console(file=io.StringIO(), force_terminal=False, width=200)
        assert (await follow(api, "7", console, poll=0.001))["status"] == "COMPLETED"
    assert "/api/executions/7/events" in shown

    quiet: list[str] = []  # `noetl run --json`, `noetl test`: nothing to show
    async with _api(quiet) as api:
        assert (await follow(api, "7", None, poll=0.001))["status"] == "COMPLETED"
    assert quiet == ["/api/executions/7", "/api/executions/7"]
