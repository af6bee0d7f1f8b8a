"""The worker's parts, each built by injection: dispositions, the middleware chain, the tool
runner's one timeout rule, the tool registry."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from noetl import jsonfast
from noetl.protocol.command import ClaimedCommand
from noetl.protocol.outcome import Outcome, Retry
from noetl.tools import output
from noetl.tools.base import ToolCall, ToolError, UnknownToolError
from noetl.tools.registry import ToolRegistry
from noetl.tools.result_store import ResultStore
from noetl.worker.ack import Ack, Nak, Term, for_status
from noetl.worker.client import Response, ServerClient
from noetl.worker.middleware import (
    ERROR_LIMIT,
    SECRETS,
    Bounds,
    CapturedOutput,
    CleanText,
    Job,
    Masking,
    Middleware,
    RetryNotices,
    SizeLimit,
    Timing,
    process,
)
from noetl.worker.runner import Credentials, ToolRunner


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, Ack), (201, Ack), (409, Ack), (404, Term), (500, Nak), (503, Nak), (422, Nak)],
)
def test_an_http_status_decides_ack_nak_or_term(status: int, kind: type) -> None:
    assert isinstance(for_status(status, "why"), kind)


def _job(tool: dict[str, Any], tool_input: dict[str, Any] | None = None) -> Job:
    return Job(ClaimedCommand(1, 2, "1:s", "s", tool, tool_input or {}, 1, "w"))


class Recorder(Middleware):
    def __init__(self, name: str, log: list[str], *, fail_before: bool = False) -> None:
        self.name, self.log, self.fail_before = name, log, fail_before

    async def before(self, job: Job) -> None:
        self.log.append(f"before {self.name}")
        if self.fail_before:
            raise ToolError(f"{self.name} refused")

    async def around(self, job: Job, proceed: Any) -> Outcome | None:
        self.log.append(f"enter {self.name}")
        outcome: Outcome | None = await proceed()
        self.log.append(f"leave {self.name}")
        return outcome

    async def after(self, job: Job, outcome: Outcome) -> Outcome:
        self.log.append(f"after {self.name}")
        return outcome


async def test_hooks_run_before_in_order_around_nested_and_after_in_reverse() -> None:
    log: list[str] = []

    async def actor(job: Job) -> Outcome:
        log.append("actor")
        return Outcome.success(1)

    outcome = await process([Recorder("a", log), Recorder("b", log)], _job({}), actor)
    assert outcome == Outcome.success(1)
    assert log == [
        "before a",
        "before b",
        "enter a",
        "enter b",
        "actor",
        "leave b",
        "leave a",
        "after b",
        "after a",
    ]


async def test_a_tool_error_in_a_before_hook_fails_the_attempt_and_the_after_hooks_see_it() -> None:
    log: list[str] = []

    async def actor(job: Job) -> Outcome:
        raise AssertionError("the actor must not run")

    middleware = [Recorder("a", log), Recorder("b", log, fail_before=True)]
    outcome = await process(middleware, _job({}), actor)
    assert outcome == Outcome.failure("b refused")
    assert log == ["before a", "before b", "after b", "after a"]


async def test_a_stopped_attempt_has_no_outcome_and_skips_the_after_hooks() -> None:
    class Stop(Middleware):
        async def around(self, job: Job, proceed: Any) -> Outcome | None:
            return None

    log: list[str] = []

    async def actor(job: Job) -> Outcome:
        return Outcome.success(1)

    assert await process([Recorder("a", log), Stop()], _job({}), actor) is None
    assert "after a" not in log


async def test_the_standard_after_hooks_time_limit_size_and_clean_the_error() -> None:
    async def big(job: Job) -> Outcome:
        return Outcome.success("x" * 100)

    outcome = await process([Timing(), SizeLimit(50)], _job({}), big)
    assert outcome is not None and not outcome.ok and outcome.result is None
    assert "limit is 50 (NOETL_MAX_PAYLOAD_BYTES)" in (outcome.error or "")
    assert outcome.duration is not None and outcome.duration >= 0

    async def nul(job: Job) -> Outcome:
        return Outcome.failure("a\x00b")

    cleaned = await process([CleanText()], _job({}), nul)
    assert cleaned is not None and "\x00" not in (cleaned.error or "")


class RetryClient(ServerClient):
    """Keeps the retry notices a worker would send (no server: nothing here touches one)."""

    def __init__(self) -> None:
        super().__init__("http://unused")
        self.sent: list[tuple[int, dict[str, Any]]] = []

    async def retrying(self, event_id: int, body: dict[str, Any]) -> Response:
        await asyncio.sleep(0.01)
        self.sent.append((event_id, body))
        return Response(200, {"recorded": True})


async def test_a_long_error_is_cut_after_its_secrets_are_masked() -> None:
    secret = "s3cret-" + "k" * 40

    async def chatty(job: Job) -> Outcome:
        job.notes[SECRETS] = [{"token": secret}]
        # the secret straddles the middle, where a cut before masking would leave half of it
        half = ERROR_LIMIT // 2 - 10
        return Outcome.failure("a" * half + secret + "b" * 200_000, problems=("p" * 10**6,) * 150)

    outcome = await process([Bounds(), Masking()], _job({}), chatty)
    assert outcome is not None and outcome.error is not None
    assert len(outcome.error) < ERROR_LIMIT + 100 and "characters cut" in outcome.error
    assert "s3cret" not in outcome.error and "kkkk" not in outcome.error
    assert outcome.error.startswith("a" * 100) and outcome.error.endswith("b" * 100)
    assert len(outcome.problems) == 101 and outcome.problems[-1] == "... and 50 more problems"
    assert all(len(problem) < ERROR_LIMIT + 100 for problem in outcome.problems)
    assert outcome.masked


async def test_a_retry_notice_is_sent_masked_before_the_outcome_is_returned() -> None:
    client = RetryClient()

    async def flaky(job: Job) -> Outcome:
        job.notes[SECRETS] = [{"password": "hunter2"}]
        output.retrying(Retry("call", 2, 3, 0.5, "login as bob/hunter2 refused"))
        return Outcome.success(1)

    chain = [Masking(), CapturedOutput(), RetryNotices(client)]
    outcome = await process(chain, _job({}), flaky)
    assert outcome is not None and outcome.ok
    assert client.sent == [  # already sent when the outcome came back
        (
            2,
            {
                "attempt": 1,
                "worker_id": "w",
                "item": "call",
                "try": 2,
                "attempts": 3,
                "delay": 0.5,
                "error": "login as bob/*** refused",
            },
        )
    ]
    assert outcome.log["stderr"] == "call: retry 2/3 in 0.5 s: login as bob/*** refused\n"


class Sleeper:
    """A tool that never stops by itself (it has no timeout of its own)."""

    kind = "sleeper"
    default_timeout = 0.05
    calls: list[ToolCall] = []

    async def run(self, call: ToolCall) -> Any:
        Sleeper.calls.append(call)
        await asyncio.Event().wait()


def _runner() -> ToolRunner:
    registry = ToolRegistry({"sleeper": Sleeper})
    return ToolRunner(registry, Credentials(ServerClient("http://unused")), grace=0.0)


async def test_every_tool_gets_one_time_limit_and_is_stopped_at_it() -> None:
    Sleeper.calls.clear()
    outcome = await _runner()(_job({"kind": "sleeper"}))
    assert outcome == Outcome.failure(
        "sleeper timed out after 0.05 s", error_fields={"retryable": True, "kind": "error"}
    )
    assert Sleeper.calls[0].timeout == 0.05  # the kind's default, handed to the tool
    await _runner()(_job({"kind": "sleeper", "timeout_seconds": 0.01}))
    assert Sleeper.calls[1].timeout == 0.01  # the tool's own field wins


async def test_a_bad_time_limit_or_an_unknown_kind_fails_the_attempt_by_name() -> None:
    outcome = await _runner()(_job({"kind": "sleeper", "timeout_seconds": "soon"}))
    assert outcome.error == "timeout_seconds must be a positive number, got 'soon'"
    unknown = await _runner()(_job({"kind": "fortran"}))
    assert (unknown.error or "").startswith("unknown tool kind 'fortran'")


async def test_a_registry_creates_each_tool_once_and_closes_them() -> None:
    closed: list[str] = []

    class Closable:
        kind = "c"

        async def run(self, call: ToolCall) -> Any:
            return None

        async def close(self) -> None:
            closed.append("c")

    registry = ToolRegistry({"c": Closable})
    assert registry.get("c") is registry.get("c")
    assert registry.kinds == frozenset({"c"})
    await registry.close()
    assert closed == ["c"]
    with pytest.raises(UnknownToolError):
        registry.get("d")


async def test_the_server_client_speaks_the_one_codec_both_ways() -> None:
    """Bodies are written by noetl.jsonfast (orjson: non-string keys, any value as text) and
    answers read by it; an answer that is not JSON comes back as its text."""
    import datetime

    from aiohttp import web

    seen: list[bytes] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(body=seen[-1], content_type=request.content_type)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<html>bad gateway</html>", status=502)

    app = web.Application()
    app.router.add_post("/api/workers/heartbeat", echo)
    app.router.add_post("/api/events/batch", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = ServerClient(f"http://127.0.0.1:{port}")
    try:
        when = datetime.date(2026, 11, 30)
        body: dict[Any, Any] = {"n": 2**63 - 1, 1: when, "s": "é"}
        answer = await client.heartbeat(body)
        failed = await client.report_many([])
    finally:
        await client.close()
        await runner.cleanup()
    assert answer.status == 200
    assert answer.body == {"n": 2**63 - 1, "1": "2026-11-30", "s": "é"}
    assert (failed.status, failed.body) == (502, "<html>bad gateway</html>")


class Stubborn:
    """A tool that goes on after its cancellation and returns."""

    kind = "stubborn"
    default_timeout = 0.05

    async def run(self, call: ToolCall) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)
        return "went on"


async def test_a_tool_that_swallows_its_time_limit_keeps_its_result_and_its_task_uncancelled() -> (
    None
):
    """As `asyncio.timeout` had it: the cancellation that the limit caused is taken back."""
    registry = ToolRegistry({"stubborn": Stubborn})
    runner = ToolRunner(registry, Credentials(ServerClient("http://unused")), grace=0.0)
    outcome = await runner(_job({"kind": "stubborn"}))
    assert outcome == Outcome.success("went on")
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # not cancelled


async def test_a_cancellation_from_outside_a_tool_call_is_no_timeout() -> None:
    Sleeper.calls.clear()
    registry = ToolRegistry({"sleeper": Sleeper})
    runner = ToolRunner(registry, Credentials(ServerClient("http://unused")), grace=30.0)
    task = asyncio.create_task(runner(_job({"kind": "sleeper", "timeout_seconds": 30})))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


def test_a_timed_outcome_keeps_every_other_field() -> None:
    full = Outcome(
        False,
        {"r": 1},
        "err",
        1.0,
        {"v": 2},
        ("p",),
        {"stdout": "o"},
        True,
        {"status": 500},
    )
    assert [f.name for f in dataclasses.fields(Outcome)] == [
        "ok",
        "result",
        "error",
        "duration",
        "variables",
        "problems",
        "log",
        "masked",
        "error_fields",
    ]  # a new field must be carried by Outcome.timed too
    assert full.timed(2.5) == dataclasses.replace(full, duration=2.5)


class Big:
    kind = "big"
    default_timeout = 5.0

    async def run(self, call: ToolCall) -> Any:
        return {"text": "x" * 100}


async def test_a_result_is_encoded_once_for_the_inline_limit_and_the_size_limit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    encoded: list[object] = []
    dumps = jsonfast.dumps

    def counted(value: Any) -> bytes:
        encoded.append(value)
        return dumps(value)

    monkeypatch.setattr(jsonfast, "dumps", counted)
    client = ServerClient("http://unused")
    runner = ToolRunner(
        ToolRegistry({"big": Big}), Credentials(client), results=ResultStore(None, tmp_path)
    )
    outcome = await process([SizeLimit(50)], _job({"kind": "big"}), runner)
    size = len(dumps({"text": "x" * 100}))
    assert outcome is not None and outcome.error == (
        f"result is {size} bytes; the limit is 50 (NOETL_MAX_PAYLOAD_BYTES)"
    )
    assert encoded == [{"text": "x" * 100}]  # by the runner; SizeLimit took its size
