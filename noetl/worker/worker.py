"""The pull loop: claim → fetch → run → report → ack, with bounded concurrency.

What the HTTP status of a claim or report means for the NATS message:
2xx → ack; 409 (another live attempt, or already finished) → ack; 404 → term;
5xx or no connection → nak with a delay (NATS redelivers; the relay covers the rest).
While a tool runs the worker tells NATS `in_progress` and renews its claim's lease; when the
server answers that the command was cancelled or superseded, the tool is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any

from nats.aio.msg import Msg

from noetl import jsonfast
from noetl.batching import KeyedBatcher
from noetl.bus.nats_client import NATSCommandSubscriber, Topology
from noetl.config import Settings
from noetl.jsonfast import clean_text
from noetl.protocol.command import ClaimedCommand, ClaimReply, LeaseReply, Refusal
from noetl.protocol.message import CommandMessage
from noetl.protocol.outcome import Outcome, Report
from noetl.tools import close_tools, get_tool
from noetl.tools.base import ToolCall, ToolError
from noetl.tools.python import configure as configure_python
from noetl.worker.client import Response, ServerClient, ServerUnreachable
from noetl.worker.pipeline import run_pipeline

log = logging.getLogger(__name__)

NAK_DELAY = 2.0
REPORT_TRIES = 5


class Worker:
    def __init__(
        self,
        settings: Settings,
        *,
        subscriber: NATSCommandSubscriber | None = None,
        client: ServerClient | None = None,
    ) -> None:
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
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()  # set once subscribed to the consumer
        self.running: set[asyncio.Task[None]] = set()
        self.held = 0  # messages fetched and not yet acked, naked or terminated
        self.released = asyncio.Event()
        self.reports: KeyedBatcher[Report, Response] = KeyedBatcher(self._send_reports)
        self.keepalive = min(Topology().ack_wait, settings.lease_seconds) / 3

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        """Work until `stop()`; then finish what is held and return."""
        configure_python(
            pool_size=self.settings.python_processes or self.settings.worker_concurrency,
            memory_mb=self.settings.python_memory_mb,
        )
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
            if self.running:
                log.info(
                    "worker %s finishing %d running command(s)", self.worker_id, len(self.running)
                )
                while self.running:  # a claim in flight may still start work
                    await asyncio.gather(*list(self.running), return_exceptions=True)
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self._send_heartbeat("stopped")
            await self.subscriber.close()
            await self.client.close()
            await close_tools()
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

    async def _pull_loop(self) -> None:
        limit = self.settings.worker_concurrency
        while not self.stopping.is_set():
            free = limit - self.held
            if free <= 0:
                self.released.clear()
                await self.released.wait()
                continue
            msgs = await self._fetch_unless_stopped(free)
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
            await asyncio.sleep(max(self.keepalive, 1.0))

    async def _send_heartbeat(self, status: str) -> None:
        body = {
            "worker_id": self.worker_id,
            "hostname": socket.gethostname(),
            "concurrency": self.settings.worker_concurrency,
            "status": status,
            "running": self.held,
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
                await self._answer(msg, 503, "worker error")

    async def _take(self, msgs: list[Msg], pending: dict[int, Msg]) -> None:
        refs: list[tuple[Msg, CommandMessage]] = []
        for msg in msgs:
            try:
                refs.append((msg, CommandMessage.decode(msg.data)))
            except ValueError as exc:
                log.error("dropping malformed message: %s", exc)  # noqa: TRY400 - no traceback needed
                await self._answer(pending.pop(id(msg)), 404, "malformed message")
        if not refs:
            return
        try:
            response = await self.client.claim_many(
                [ref.event_id for _, ref in refs], self.worker_id
            )
        except ServerUnreachable as exc:
            log.warning("claim of %d command(s) failed (%s); nak", len(refs), exc)
            response = Response(503, {"message": str(exc)})
        if response.status >= 300:
            for msg, _ in refs:
                await self._answer(pending.pop(id(msg)), response.status, response.message)
            return
        reply = ClaimReply.from_json(response.body)
        claimed = {command.event_id: command for command in reply.claimed}
        for msg, ref in refs:
            command = claimed.pop(ref.event_id, None)  # a duplicate in the batch gets nothing
            pending.pop(id(msg))
            if command is not None:
                self._spawn(self.work(msg, ref, command))
            else:
                refusal = reply.refused.get(ref.event_id) or Refusal(409, "duplicate")
                log.debug("claim of %s: %s", ref.command_id, refusal.message)
                await self._answer(msg, refusal.status, refusal.message)

    async def work(self, msg: Msg, ref: CommandMessage, command: ClaimedCommand) -> None:
        try:
            status, message = await self._work(msg, ref, command)
        except Exception:  # a bug must not leak the slot; NATS redelivers after a nak
            log.exception("command %s: worker error", ref.command_id)
            status, message = 503, "worker error"
        await self._answer(msg, status, message)

    async def _work(
        self, msg: Msg, ref: CommandMessage, command: ClaimedCommand
    ) -> tuple[int, str]:
        outcome = await self._run_with_keepalive(msg, ref, command)
        if outcome is None:  # cancelled or superseded while running: nothing to report
            return 409, "cancelled or superseded"
        if outcome.error:
            outcome = replace(outcome, error=clean_text(outcome.error))
        report = Report(ref.execution_id, ref.command_id, command.attempt, self.worker_id, outcome)
        response = await self.reports.submit("reports", report)
        if response.status >= 300:
            log.warning(
                "report of %s: HTTP %d %s", ref.command_id, response.status, response.message
            )
        return response.status, response.message

    async def _answer(self, msg: Msg, status: int, message: str) -> None:
        """What an HTTP status means for the NATS message: 2xx and 409 ack (done, or someone
        else's), 404 term (nothing to do, ever), anything else nak (try again later)."""
        try:
            if status < 300 or status == 409:
                await msg.ack()
            elif status == 404:
                log.warning("terminating message: %s", message)
                await msg.term()
            else:
                await msg.nak(delay=NAK_DELAY)
        except Exception as exc:  # NATS away: the message is redelivered after the ack wait
            log.warning("could not answer NATS: %s", exc)
        finally:
            self.held -= 1
            self.released.set()

    async def _send_reports(self, reports: Sequence[Report]) -> list[Response | Exception]:
        """Outcomes that finished together go in one request, retried while the server is down."""
        delay = 0.2
        bodies = [report.to_json() for report in reports]
        for _ in range(REPORT_TRIES):
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
            delay = min(delay * 2, 5.0)
        return [Response(503, {"message": "server unreachable"})] * len(bodies)

    async def _run_with_keepalive(
        self, msg: Msg, ref: CommandMessage, command: ClaimedCommand
    ) -> Outcome | None:
        work = asyncio.create_task(self.execute(ref, command))
        while True:
            done, _ = await asyncio.wait({work}, timeout=self.keepalive)
            if done:
                return work.result()
            with contextlib.suppress(Exception):
                await msg.in_progress()
            if not await self._renew(ref, command):
                log.warning("command %s was cancelled or superseded; stopping it", ref.command_id)
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return None

    async def _renew(self, ref: CommandMessage, command: ClaimedCommand) -> bool:
        try:
            response = await self.client.renew_lease(ref.event_id, command.attempt)
        except ServerUnreachable:
            return True  # the server is unreachable: keep working, report later
        if response.status >= 500:
            return True
        if response.status >= 300:
            return False
        try:
            return LeaseReply.from_json(response.body).keep_going
        except ValueError:
            log.warning("lease of %s: unexpected answer %s", ref.command_id, response.message)
            return True

    async def execute(self, ref: CommandMessage, command: ClaimedCommand) -> Outcome:
        """Run the command's tool or pipeline; every failure becomes an Outcome."""
        spec = dict(command.tool)
        kind = str(spec.pop("kind", ""))
        started = time.perf_counter()

        async def call(kind: str, config: dict[str, Any], tool_input: dict[str, Any]) -> Any:
            auth = await self._credential(config.get("auth"))
            call = ToolCall(kind, config, tool_input, ref.execution_id, ref.step, auth)
            return await get_tool(kind).run(call)

        variables: dict[str, Any] = {}
        problems: list[str] = []
        try:
            if kind == "pipeline":
                payload = command.input
                keychain = {
                    name: await self._credential(credential)
                    for name, credential in (payload.get("keychain") or {}).items()
                }
                run = await run_pipeline(spec["items"], payload, call, keychain)
                variables, problems = run.variables, run.problems
                if not run.ok:
                    raise ToolError(run.error or "failed")
                result = run.data
            else:
                result = await call(kind, spec, dict(command.input))
            self._check_size(result)
        except ToolError as exc:
            error = str(exc)
        except Exception as exc:  # a bug in a tool must not take the worker down
            log.exception("tool %s crashed on %s", kind, ref.command_id)
            error = f"{type(exc).__name__}: {exc}"
        else:
            return Outcome.success(
                result,
                duration=time.perf_counter() - started,
                variables=variables,
                problems=tuple(problems),
            )
        return Outcome.failure(
            error, duration=time.perf_counter() - started, problems=tuple(problems)
        )

    async def _credential(self, auth: Any) -> dict[str, Any] | None:
        """The data of the credential a tool names in `auth`, fetched right before the run."""
        if auth is None or auth == "":
            return None
        if isinstance(auth, dict):
            return auth  # connection fields given inline
        try:
            reply = await self.client.credential(str(auth))
        except ServerUnreachable as exc:
            raise ToolError(
                f"credential {auth!r}: server unreachable ({exc})", retryable=True
            ) from None
        if reply.status == 404:
            raise ToolError(f"credential {auth!r} does not exist")
        if reply.status != 200:
            raise ToolError(f"credential {auth!r}: HTTP {reply.status} {reply.message}")
        data: dict[str, Any] = reply.body["data"]
        return data

    def _check_size(self, result: Any) -> None:
        size = len(jsonfast.dumps(result))
        if size > self.settings.max_payload_bytes:
            raise ToolError(
                f"result is {size} bytes; the limit is {self.settings.max_payload_bytes}"
                " (NOETL_MAX_PAYLOAD_BYTES)"
            )
