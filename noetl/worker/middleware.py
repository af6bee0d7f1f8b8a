"""The command path as a small pipeline of middleware around the tool runner (the actor).

    before hooks, in order          (a ToolError here is the attempt's failure)
      around hooks, first outermost (e.g. the lease keepalive runs the rest as a task)
        the actor: ToolRunner       (tool or pipeline → Outcome, never raises for a tool)
    after hooks, in reverse order   (may change the outcome: size limit, clean text, ...)

The first middleware's `after` sees the outcome last: put what must see everything (secret
masking) first. Any other exception from a hook is a bug in the worker: it propagates, and the
message is nak'ed for a redelivery (the worker slot is never lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nats.aio.msg import Msg

from noetl import jsonfast
from noetl.jsonfast import clean_text
from noetl.masking import Mask
from noetl.protocol.command import ClaimedCommand, LeaseReply
from noetl.protocol.outcome import Outcome, Retry
from noetl.tools import output
from noetl.tools.base import ToolError
from noetl.worker.client import ServerClient, ServerUnreachable

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One claimed command on its way through the middleware."""

    command: ClaimedCommand
    message: Msg | None = None  # the NATS message that brought it
    started: float = 0.0  # time.perf_counter() when the first before hook ran
    notes: dict[str, Any] = field(default_factory=dict)  # scratch space for middleware


SECRETS = "secrets"  # job.notes key: the credential data resolved for the command
RESULT_SIZE = "result_size"  # job.notes key: (a result, the length of its JSON), by the runner
Proceed = Callable[[], Awaitable[Outcome | None]]
Actor = Callable[[Job], Awaitable[Outcome]]


class Middleware:
    """One concern around running a command; override the hooks it needs."""

    async def before(self, job: Job) -> None:
        return None

    async def around(self, job: Job, proceed: Proceed) -> Outcome | None:
        """Run `proceed()` (the rest of the chain); None means stopped, nothing to report."""
        return await proceed()

    async def after(self, job: Job, outcome: Outcome) -> Outcome:
        return outcome


async def process(middleware: Sequence[Middleware], job: Job, actor: Actor) -> Outcome | None:
    """Run `job` through the middleware and the actor; None when it was stopped."""
    return await Chain(middleware).run(job, actor)


class Chain:
    """The middleware's hooks, found once: a hook a middleware does not override is skipped
    (it would do nothing, at the cost of a call). A worker keeps one for every command."""

    def __init__(self, middleware: Sequence[Middleware]) -> None:
        found = [(hook, _overrides(type(hook))) for hook in middleware]
        self.befores = [hook.before for hook, has in found if has.before]
        self.arounds = [hook.around for hook, has in reversed(found) if has.around]
        self.afters = [hook.after for hook, has in reversed(found) if has.after]

    async def run(self, job: Job, actor: Actor) -> Outcome | None:
        """Run `job` through the hooks and the actor; None when it was stopped."""
        outcome: Outcome | None
        try:
            for before in self.befores:
                await before(job)
        except ToolError as exc:
            outcome = Outcome.failure(str(exc))
        else:
            proceed: Proceed = functools.partial(actor, job)
            for around in self.arounds:
                proceed = functools.partial(around, job, proceed)
            outcome = await proceed()
            if outcome is None:
                return None
        for after in self.afters:
            outcome = await after(job, outcome)
        return outcome


@dataclass(frozen=True)
class _Hooks:
    before: bool
    around: bool
    after: bool


def _overrides(kind: type[Middleware]) -> _Hooks:
    """Which hooks a middleware class overrides."""
    names = _Hooks.__annotations__
    return _Hooks(*(getattr(kind, name) is not getattr(Middleware, name) for name in names))


class Timing(Middleware):
    """The outcome's duration: from the first before hook to the last after hook."""

    async def before(self, job: Job) -> None:
        job.started = time.perf_counter()

    async def after(self, job: Job, outcome: Outcome) -> Outcome:
        return outcome.timed(time.perf_counter() - job.started)


ERROR_LIMIT = 64 * 1024  # characters of an error message or template problem the worker reports
PROBLEMS_LIMIT = 100  # template problems one outcome reports


def bounded(text: str, limit: int = ERROR_LIMIT) -> str:
    """`text`, or its head and tail with a note of how much was cut between them (a
    traceback's last lines say what failed; its first ones, where)."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return f"{text[:keep]}\n[... {len(text) - 2 * keep} characters cut ...]\n{text[-keep:]}"


class Bounds(Middleware):
    """An error message and the template problems are cut to `ERROR_LIMIT` characters each
    (at most `PROBLEMS_LIMIT` problems): a report larger than the server takes is refused
    (413) and the step was lost (`worker_lost`) instead of failing with its error. Outermost,
    so it cuts what masking has already masked (a cut never leaves half a secret unmasked)."""

    async def after(self, job: Job, outcome: Outcome) -> Outcome:
        error = outcome.error
        problems = outcome.problems
        if (error is None or len(error) <= ERROR_LIMIT) and (
            len(problems) <= PROBLEMS_LIMIT and all(len(p) <= ERROR_LIMIT for p in problems)
        ):
            return outcome
        kept = tuple(bounded(p) for p in problems[:PROBLEMS_LIMIT])
        if len(problems) > PROBLEMS_LIMIT:
            kept += (f"... and {len(problems) - PROBLEMS_LIMIT} more problems",)
        return replace(outcome, error=None if error is None else bounded(error), problems=kept)


class Masking(Middleware):
    """Every secret value resolved for the command (`job.notes[SECRETS]`, filled by the
    runner's credentials) becomes `***` in the outcome's result, error, variables, problems and
    captured output (its base64 and URL-encoded forms too, noetl.masking) before anything
    leaves the worker; the outcome says so (`masked`), also when a result the command kept in
    the result store had a secret masked (`output.concealed`). Second in the list (after
    Bounds, which only cuts), so its `after` sees the final outcome."""

    async def after(self, job: Job, outcome: Outcome) -> Outcome:
        captured: output.CommandOutput | None = job.notes.get("output")
        if captured is not None and captured.masked:  # in a result it stored (concealed)
            outcome = replace(outcome, masked=True)
        secrets = job.notes.get(SECRETS)
        if not secrets:  # most commands resolve no credential
            return outcome
        mask = Mask(secrets)
        if not mask:
            return outcome
        result, in_result = mask.value(outcome.result)
        error, in_error = mask.text(outcome.error) if outcome.error else (None, False)
        variables, in_variables = mask.value(dict(outcome.variables))
        problems = [mask.text(problem) for problem in outcome.problems]
        printed = {stream: mask.text(text) for stream, text in outcome.log.items()}
        return replace(
            outcome,
            result=result,
            error=error,
            variables=variables,
            problems=tuple(text for text, _ in problems),
            log={stream: text for stream, (text, _) in printed.items()},
            masked=outcome.masked
            or in_result
            or in_error
            or in_variables
            or any(hit for _, hit in problems)
            or any(hit for _, hit in printed.values()),
        )


class SizeLimit(Middleware):
    """A result larger than NOETL_MAX_PAYLOAD_BYTES fails the attempt (it would not be stored),
    and so does one that breaks the codec rule (noetl.jsonfast: numbers every component reads
    back exactly)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    async def after(self, job: Job, outcome: Outcome) -> Outcome:
        if not outcome.ok:
            return outcome
        found = jsonfast.unportable(outcome.result)
        if found is not None:
            where, problem = found
            dot = "." if where and not where.startswith("[") else ""
            error = (
                f"result{dot}{where}: {problem}"
                " (JSON numbers must be 64-bit integers or finite doubles)"
            )
            return replace(outcome, ok=False, result=None, error=error)
        noted = job.notes.get(RESULT_SIZE)  # the runner measured it (a result is encoded once)
        if noted is not None and noted[0] is outcome.result:
            size = noted[1]
        else:
            size = len(jsonfast.dumps(outcome.result))
        if size <= self.max_bytes:
            return outcome
        error = f"result is {size} bytes; the limit is {self.max_bytes} (NOETL_MAX_PAYLOAD_BYTES)"
        return replace(outcome, ok=False, result=None, error=error)


class CleanText(Middleware):
    """An error message PostgreSQL can store (no NUL, no lone surrogates)."""

    async def after(self, job: Job, outcome: Outcome) -> Outcome:
        if outcome.error is None:
            return outcome
        return replace(outcome, error=clean_text(outcome.error))


class CapturedOutput(Middleware):
    """What the tools print (`noetl.tools.output`), bounded per stream, with the values of the
    credentials the command was given masked, goes with the outcome as its `log`. Put it
    outside the keepalive: the work runs as a task that must inherit the capture."""

    async def around(self, job: Job, proceed: Proceed) -> Outcome | None:
        with output.capturing() as captured:
            job.notes["output"] = captured
            return await proceed()

    async def after(self, job: Job, outcome: Outcome) -> Outcome:
        captured: output.CommandOutput | None = job.notes.get("output")
        printed = captured.as_dict() if captured is not None else {}
        if not printed or captured is None:
            return outcome
        masking = Mask(captured.secrets)
        log = {k: clean_text(masking.text(v)[0]) for k, v in printed.items()}
        return replace(outcome, log=log)


class RetryNotices(Middleware):
    """A policy retry (`noetl.tools.output.retrying`) is told to the server as it happens, its
    error masked like the outcome's, so `noetl run` and the web UI show it while the step runs.
    The outcome waits (up to `wait` seconds) for the notices sent, so they come before it in
    the log. A notice the server does not take is dropped: the step's log keeps the line.
    Inside CapturedOutput, whose capture it listens to."""

    def __init__(self, client: ServerClient, wait: float = 5.0) -> None:
        self.client = client
        self.wait = wait
        self.sending: set[asyncio.Task[None]] = set()  # held here until sent

    async def around(self, job: Job, proceed: Proceed) -> Outcome | None:
        captured: output.CommandOutput | None = job.notes.get("output")
        if captured is None:
            return await proceed()
        sent: list[asyncio.Task[None]] = []

        def notice(retry: Retry) -> None:
            secrets = [*job.notes.get(SECRETS, ()), *captured.secrets]
            error = clean_text(Mask(secrets).text(retry.error)[0])
            task = asyncio.ensure_future(self._send(job.command, replace(retry, error=error)))
            sent.append(task)
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)

        captured.on_retry = notice
        try:
            outcome = await proceed()
        finally:
            captured.on_retry = None
        if sent:
            await asyncio.wait(sent, timeout=self.wait)
        return outcome

    async def _send(self, command: ClaimedCommand, retry: Retry) -> None:
        body = {"attempt": command.attempt, "worker_id": command.worker_id, **retry.to_json()}
        body["error"] = body["error"][:2000]
        try:
            response = await self.client.retrying(command.event_id, body)
        except ServerUnreachable as exc:
            log.debug("retry notice of %s not sent: %s", command.command_id, exc)
            return
        if response.status >= 300:
            log.debug("retry notice of %s: HTTP %d", command.command_id, response.status)


class LeaseKeepalive(Middleware):
    """While the command runs: tell NATS `in_progress` and renew the claim's lease every
    `interval` seconds; stop the work when the server says the attempt should not go on
    (cancelled, superseded, ended). An unreachable server does not stop it."""

    def __init__(self, client: ServerClient, interval: float) -> None:
        self.client = client
        self.interval = interval

    async def around(self, job: Job, proceed: Proceed) -> Outcome | None:
        """The work runs in this task; a timer starts each renewal (most commands end before
        the first: no task, no wait per command). A renewal that says stop cancels this
        task, and a renewal still running when the work ends decides as if it came first."""
        loop = asyncio.get_running_loop()
        work = asyncio.current_task(loop)
        assert work is not None
        renewals = _Renewals(self, job, work, loop)
        try:
            outcome = await proceed()
        except asyncio.CancelledError:
            renewals.end()
            if renewals.stopped and work.uncancel() == 0:  # cancelled by a renewal alone
                self._stopped(job)
                return None
            raise
        renewals.end()
        if renewals.stopped or (renewals.running is not None and not await renewals.running):
            if renewals.stopped:  # the work swallowed the cancellation
                work.uncancel()
            self._stopped(job)
            return None
        return outcome

    def _stopped(self, job: Job) -> None:
        log.info(  # routine: its execution failed or was cancelled, or a retry took it
            "command %s was cancelled or superseded; stopping it", job.command.command_id
        )

    async def _renew(self, command: ClaimedCommand) -> bool:
        try:
            response = await self.client.renew_lease(command.event_id, command.attempt)
        except ServerUnreachable:
            return True  # keep working, report later
        if response.status >= 500:
            return True
        if response.status >= 300:
            return False
        try:
            return LeaseReply.from_json(response.body).keep_going
        except ValueError:
            log.warning("lease of %s: unexpected answer %s", command.command_id, response.message)
            return True


class _Renewals:
    """The lease renewals of one running command: every `interval` seconds (counted from the
    end of the last renewal) tell NATS `in_progress` and renew the lease; a renewal answered
    with stop cancels the work's task (`stopped`)."""

    def __init__(
        self,
        keepalive: LeaseKeepalive,
        job: Job,
        work: asyncio.Task[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.keepalive = keepalive
        self.job = job
        self.work = work
        self.loop = loop
        self.running: asyncio.Task[bool] | None = None  # a renewal under way
        self.stopped = False
        self.ended = False
        self.timer = self.loop.call_later(keepalive.interval, self._start)

    def end(self) -> None:
        """The work ended: no more renewals, and none cancels it any more."""
        self.ended = True
        self.timer.cancel()

    def _start(self) -> None:
        self.running = self.loop.create_task(self._renew())

    async def _renew(self) -> bool:
        keep_going = True
        try:
            if self.job.message is not None:
                with contextlib.suppress(Exception):
                    await self.job.message.in_progress()
            keep_going = await self.keepalive._renew(self.job.command)
        except Exception:  # a bug here must not stop the work or the renewals
            log.exception("lease renewal of %s failed", self.job.command.command_id)
        if self.ended:
            return keep_going
        if keep_going:
            self.timer = self.loop.call_later(self.keepalive.interval, self._start)
        else:
            self.stopped = True
            self.work.cancel()
        return keep_going


def standard(client: ServerClient, *, keepalive: float, max_payload_bytes: int) -> list[Middleware]:
    """The worker's middleware, outermost first."""
    return [
        Bounds(),
        Masking(),
        Timing(),
        CapturedOutput(),
        RetryNotices(client),
        LeaseKeepalive(client, keepalive),
        SizeLimit(max_payload_bytes),
        CleanText(),
    ]
