"""The pull loop: fetch → claim (a batch in one request) → run → report → answer NATS.

A worker reads one way: `_pull_loop` fetches messages up to its concurrency; `take` claims the
fetched batch; `work` runs each claimed command through the middleware (`worker.middleware`:
timing, lease keepalive, size limit, ...) around the tool runner (`worker.runner`), reports
the outcome (outcomes that finish together go in one request) and settles the NATS message
with the disposition the answer calls for (`worker.ack`: ack, nak with a delay, or term).
Tools, middleware, the server client and the NATS subscriber are passed in (or built from the
settings); nothing is process-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

from nats.aio.msg import Msg

from noetl.batching import Batcher
from noetl.bus.nats_client import NATSCommandSubscriber, Topology
from noetl.config import Settings
from noetl.masking import install as install_masking
from noetl.protocol.command import ClaimedCommand, ClaimReply, Refusal
from noetl.protocol.events import ExecutionStatus
from noetl.protocol.message import CommandMessage
from noetl.protocol.outcome import Report, ReportReply
from noetl.tools.python_pool import PythonPool
from noetl.tools.registry import ToolRegistry, builtin_factories
from noetl.tools.result_store import ResultStore
from noetl.worker.ack import Ack, Disposition, Nak, Term, for_status, settle
from noetl.worker.client import Response, ServerClient, ServerUnreachable
from noetl.worker.middleware import Chain, Job, Middleware
from noetl.worker.middleware import standard as standard_middleware
from noetl.worker.runner import Credentials, ToolRunner

log = logging.getLogger(__name__)

NAK_DELAY = 2.0  # seconds before fetching again after a failed fetch
REPORT_PATIENCE = 600.0  # seconds a finished outcome is kept and its report retried
REPORT_BACKOFF = 5.0  # longest pause between two tries
_ENDED = {status.value for status in ExecutionStatus if status.terminal}


async def _in_progress(msg: Msg) -> None:
    with contextlib.suppress(Exception):
        await msg.in_progress()


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        subscriber: NATSCommandSubscriber | None = None,
        client: ServerClient | None = None,
        tools: ToolRegistry | None = None,
        middleware: Sequence[Middleware] | None = None,
    ) -> None:
        """`middleware`: the whole list, outermost first (default `middleware.standard`)."""
        self.settings = settings
        self.worker_id = settings.worker_id
        self.subscriber = subscriber or NATSCommandSubscriber(
            settings.require_nats_url(),
            Topology.from_settings(settings),
            name=f"noetl-worker-{settings.worker_id}",
        )
        self.client = client or ServerClient(
            settings.server_url, token=settings.worker_token or settings.api_token
        )
        self.keepalive = min(Topology().ack_wait, settings.lease_seconds) / 3
        self.results = ResultStore(settings.nats_url, settings.home)  # results by reference
        self.tools = tools or ToolRegistry(
            builtin_factories(
                PythonPool(
                    pool_size=settings.python_processes or settings.worker_concurrency,
                    memory_mb=settings.python_memory_mb,
                ),
                self.results,
                settings.max_response_bytes,
            )
        )
        self.runner = ToolRunner(
            self.tools,
            Credentials(self.client),
            results=self.results,
            max_inline_bytes=settings.max_payload_bytes,
            lend_slot=self._lent_slot,
        )
        self.middleware = list(
            middleware
            if middleware is not None
            else standard_middleware(
                self.client,
                keepalive=self.keepalive,
                max_payload_bytes=settings.max_payload_bytes,
            )
        )
        self.chain = Chain(self.middleware)
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()  # set once subscribed to the consumer
        self.ended = asyncio.Event()  # set when a report's answer says its execution ended
        self.running: set[asyncio.Task[None]] = set()
        self.held = 0  # messages fetched and not yet acked, naked or terminated
        self.holding: set[int] = set()  # commands running or reporting: the heartbeat lists them
        self.released = asyncio.Event()
        self.reports: Batcher[Report, Response] = Batcher(self._send_reports)
        self.telling: set[asyncio.Task[None]] = set()  # in_progress sent while a report waits

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Work until `stop()`; then finish what is held and return."""
        install_masking()  # resolved secrets never reach a log record in clear
        if not await self._subscribe():
            await self.client.close()
            return
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        log.info(
            "worker %s started (concurrency %d)", self.worker_id, self.settings.worker_concurrency
        )
        try:
            await self._pull_loop()
        finally:
            try:
                if self.running:
                    log.info(
                        "worker %s finishing %d running command(s)",
                        self.worker_id,
                        len(self.running),
                    )
                while self.running:  # a claim in flight may still start work
                    await asyncio.gather(*list(self.running), return_exceptions=True)
            finally:  # also when cancelled meanwhile: no heartbeat (or sender) outlives it
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
                await self.reports.close()
            await self._send_heartbeat("stopped")
            await self.subscriber.close()
            await self.client.close()
            await self.tools.close()
            await self.results.close()
            log.info("worker %s stopped", self.worker_id)

    async def _subscribe(self) -> bool:
        """Bind to the consumer, retrying while NATS is unreachable; False if stopped first."""
        delay = 0.2
        while not self.stopping.is_set():
            try:
                await self.subscriber.start()
            except Exception as exc:  # NATS down or not ready: wait and retry
                log.warning("cannot subscribe yet (%s); retrying in %.1f s", exc, delay)
                await self.subscriber.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                delay = min(delay * 2, 5.0)
            else:
                self.ready.set()
                return True
        return False

    def stop(self) -> None:
        self.stopping.set()

    @contextlib.asynccontextmanager
    async def _lent_slot(self) -> AsyncIterator[None]:
        """A command that waits for a sub-playbook (a pipeline's item) lends its slot: the
        worker fetches another command meanwhile. Otherwise pipelines waiting in every slot
        would leave none for their children's steps: a deadlock until the item's timeout.
        The slot is taken back when the wait ends (the worker may run one over its
        concurrency until a command ends)."""
        self.held -= 1
        self.released.set()
        try:
            yield
        finally:
            self.held += 1

    async def _pull_loop(self) -> None:
        limit = self.settings.worker_concurrency
        while not self.stopping.is_set():
            free = limit - self.held
            if free <= 0:
                self.released.clear()
                await self.released.wait()
                continue
            try:
                msgs = await self._fetch_unless_stopped(free)
            except Exception:  # whatever NATS answered, the worker keeps pulling
                log.exception("fetch failed; retrying in %.1f s", NAK_DELAY)
                await asyncio.sleep(NAK_DELAY)
                continue
            if msgs:
                self.held += len(msgs)
                self._spawn(self.take(msgs))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _fetch_unless_stopped(self, batch: int) -> list[Msg]:
        """Fetch, but give up at once when stop() is called (an idle worker stops quickly)."""
        fetching = asyncio.create_task(self.subscriber.fetch(batch, wait=1.0))
        stopping = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({fetching, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if fetching.done():
            return fetching.result()
        fetching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetching
        return []

    async def _heartbeat_loop(self) -> None:
        while True:
            await self._send_heartbeat("stopping" if self.stopping.is_set() else "ready")
            await asyncio.sleep(self.settings.heartbeat_seconds)  # the server's dead-worker clock

    async def _send_heartbeat(self, status: str) -> None:
        body = {
            "worker_id": self.worker_id,
            "hostname": socket.gethostname(),
            "concurrency": self.settings.worker_concurrency,
            "status": status,
            "running": self.held,
            "commands": sorted(self.holding),
        }
        try:
            await self.client.heartbeat(body)
        except ServerUnreachable as exc:
            log.debug("heartbeat failed: %s", exc)

    # -- messages -----------------------------------------------------------------------

    async def take(self, msgs: list[Msg]) -> None:
        """Claim a fetched batch in one request, then run each claimed command."""
        pending = {id(msg): msg for msg in msgs}  # answered or handed over to work()
        try:
            await self._take(msgs, pending)
        except Exception:  # a bug or a malformed reply must not leak the slots
            log.exception("could not handle %d message(s); nak", len(pending))
            for msg in pending.values():
                await self._settle(msg, Nak("worker error"))

    async def _take(self, msgs: list[Msg], pending: dict[int, Msg]) -> None:
        refs: list[tuple[Msg, CommandMessage]] = []
        for msg in msgs:
            try:
                refs.append((msg, CommandMessage.decode(msg.data)))
            except ValueError as exc:
                log.error("dropping malformed message: %s", exc)  # noqa: TRY400 - no traceback needed
                await self._settle(pending.pop(id(msg)), Term("malformed message"))
        if not refs:
            return
        try:
            event_ids = [ref.event_id for _, ref in refs]
            response = await self.client.claim_many(event_ids, self.worker_id)
        except ServerUnreachable as exc:
            log.warning("claim of %d command(s) failed (%s); nak", len(refs), exc)
            response = Response(503, {"message": str(exc)})
        if response.status >= 300:
            for msg, _ in refs:
                disposition = for_status(response.status, response.message)
                await self._settle(pending.pop(id(msg)), disposition)
            return
        reply = ClaimReply.from_json(response.body)
        claimed = {command.event_id: command for command in reply.claimed}
        for msg, ref in refs:
            command = claimed.pop(ref.event_id, None)  # a duplicate in the batch gets nothing
            pending.pop(id(msg))
            if command is not None:
                self._spawn(self.work(msg, command))
            else:
                refusal = reply.refused.get(ref.event_id) or Refusal(409, "duplicate")
                log.debug("claim of %s: %s", ref.command_id, refusal.message)
                await self._settle(msg, for_status(refusal.status, refusal.message))

    async def work(self, msg: Msg, command: ClaimedCommand) -> None:
        """Run one claimed command through the middleware, report it, answer NATS; then run
        the commands the server hands over in its answers (continuation) in the same slot."""
        following: ClaimedCommand | None = None
        answered: asyncio.Task[None] | None = None
        try:
            try:
                disposition, following = await self._work(command, msg)
            except Exception:  # a bug must not leak the slot; NATS redelivers after a nak
                log.exception("command %s: worker error", command.command_id)
                disposition = Nak("worker error")
            answered = asyncio.create_task(settle(msg, disposition))  # while the next runs
            while following is not None:  # claimed for us: no NATS message, the lease holds it
                current, following = following, None
                try:
                    _, following = await self._work(current, None)
                except Exception:  # its lease lapses and the relay republishes it
                    log.exception("command %s: worker error", current.command_id)
        finally:
            if answered is not None:
                await answered
            self.held -= 1
            self.released.set()

    async def _work(
        self, command: ClaimedCommand, msg: Msg | None
    ) -> tuple[Disposition, ClaimedCommand | None]:
        self.holding.add(command.event_id)
        try:
            return await self._run_and_report(command, msg)
        finally:
            self.holding.discard(command.event_id)

    async def _run_and_report(
        self, command: ClaimedCommand, msg: Msg | None
    ) -> tuple[Disposition, ClaimedCommand | None]:
        outcome = await self.chain.run(Job(command, msg), self.runner)
        if outcome is None:  # cancelled or superseded while running: nothing to report
            return Ack("cancelled or superseded"), None
        report = Report(
            command.execution_id,
            command.command_id,
            command.attempt,
            self.worker_id,
            outcome,
            takes_next=not self.stopping.is_set(),
        )
        response = await self._report_holding(msg, report)
        if response.status >= 300:  # a 409 is routine: the command was cancelled or superseded
            log.log(
                logging.INFO if response.status == 409 else logging.WARNING,
                "report of %s: HTTP %d %s",
                command.command_id,
                response.status,
                response.message,
            )
            return for_status(response.status, response.message), None
        following = None
        if isinstance(response.body, dict):
            if response.body.get("status") in _ENDED:
                self.ended.set()
            if response.body.get("next") is not None:
                following = ReportReply.from_json(response.body).next
        return Ack(), following  # (its reason is not the reply's text: that is long to make)

    async def _settle(self, msg: Msg, disposition: Disposition) -> None:
        try:
            await settle(msg, disposition)
        finally:
            self.held -= 1
            self.released.set()

    async def _report_holding(self, msg: Msg | None, report: Report) -> Response:
        """Report an outcome, telling NATS the message (if one brought the command) is still
        in progress while the server is away, so it is not redelivered and the step is not
        run again meanwhile. A live worker keeps its claim meanwhile (its heartbeats)."""
        if msg is None:  # a continuation: its lease holds it
            return await self.reports.submit(report, alone=len(self.holding) == 1)
        loop = asyncio.get_running_loop()
        timer: list[asyncio.TimerHandle] = []

        def tell() -> None:  # every `keepalive` seconds while the report waits
            task = loop.create_task(_in_progress(msg))
            self.telling.add(task)
            task.add_done_callback(self.telling.discard)
            timer[:] = [loop.call_later(self.keepalive, tell)]

        timer.append(loop.call_later(self.keepalive, tell))
        try:
            return await self.reports.submit(report, alone=len(self.holding) == 1)
        finally:
            timer[0].cancel()

    async def _send_reports(self, reports: Sequence[Report]) -> list[Response | Exception]:
        """Outcomes that finished together go in one request. A finished outcome is kept and
        its report retried with backoff while the server is down (up to `REPORT_PATIENCE`
        seconds), until the server records it or answers that it cannot (4xx: superseded,
        already recorded, unknown)."""
        deadline = time.monotonic() + REPORT_PATIENCE  # (the loop's clock costs a getpid)
        delay = 0.2
        bodies = [report.to_json() for report in reports]
        while time.monotonic() < deadline:
            try:
                response = await self.client.report_many(bodies)
            except ServerUnreachable as exc:
                log.warning("report of %d outcome(s) failed (%s); retrying", len(bodies), exc)
            else:
                if response.status < 300:
                    return [Response(r["status"], r["body"]) for r in response.body["results"]]
                if response.status < 500:
                    return [response] * len(bodies)
                log.warning(
                    "report of %d outcome(s): HTTP %d; retrying", len(bodies), response.status
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, REPORT_BACKOFF)
        log.error(
            "gave up reporting %d outcome(s) after %.0f s; the relay will run them again",
            len(bodies),
            REPORT_PATIENCE,
        )
        return [Response(503, {"message": "server unreachable"})] * len(bodies)
