"""The actor at the centre of the worker's middleware: run a claimed command's tool, or its
pipeline of tools, and turn whatever happens into an Outcome.

Every tool call goes through `call`: the credential named by `auth` is fetched right before
the run, and the one timeout rule applies (`ToolRegistry.time_limit`: the tool's
`timeout_seconds`, else the kind's default). Tools that can stop their work precisely do so at
that limit themselves; for any other tool the runner stops waiting a moment later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from noetl import jsonfast
from noetl.credential_names import referenced, token_calls
from noetl.dsl import semantics
from noetl.masking import RECENT_SECRETS, Mask
from noetl.protocol.command import ClaimedCommand
from noetl.protocol.outcome import Outcome
from noetl.tools import output
from noetl.tools.base import ToolCall, ToolError, timeout_seconds
from noetl.tools.registry import ToolRegistry
from noetl.tools.result_store import ResultStore, resolve_refs, select
from noetl.worker.client import ServerClient, ServerUnreachable
from noetl.worker.keychain import Keychain, secret_strings
from noetl.worker.middleware import RESULT_SIZE, SECRETS, Job
from noetl.worker.pipeline import failed_call, run_pipeline

log = logging.getLogger(__name__)

DEFAULT_INLINE_BYTES = 4 * 1024 * 1024  # NOETL_MAX_PAYLOAD_BYTES's default
OUTPUT_INLINE_BYTES = 64 * 1024  # upstream's inline tier, for steps with an `output` block
CHILD_TIMEOUT = 3600.0  # seconds a pipeline's sub-playbook may run unless its `timeout` says
GRACE = 2.0  # seconds a tool gets past its limit to stop itself before the runner gives up


_JOB: ContextVar[Job | None] = ContextVar("noetl_worker_job", default=None)


def learned(secrets: Any) -> None:
    """Secret values the worker now knows (credential data, resolved keychain values and
    tokens): the one way they are registered, so that each is masked everywhere it could
    leave the worker: the command's printed output, its outcome (`job.notes[SECRETS]`, the
    Masking middleware), what it stores by reference, and every log record of this process
    (noetl.masking)."""
    if not secrets:
        return
    output.remember_secret(secrets)
    job = _JOB.get()
    if job is not None:
        job.notes.setdefault(SECRETS, []).append(secrets)
    RECENT_SECRETS.remember(Mask([secrets]))


class Credentials:
    """The data of a credential a tool names in `auth`, fetched from the server for the command
    being run (`&command=<event_id>`: the server checks this worker holds it and that the
    command names that credential). Each value fetched is `learned`."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client

    async def stored(self, name: str) -> dict[str, Any] | None:
        """A stored credential's data, or None when it does not exist (keychain entries)."""
        try:
            return await self.resolve(name)
        except ToolError as exc:
            if str(exc).endswith("does not exist"):
                return None
            raise

    async def resolve(self, auth: Any) -> dict[str, Any] | None:
        if auth is None or auth == "":
            return None
        if isinstance(auth, dict):
            output.remember_secret(auth)
            return auth  # connection fields given inline
        job = _JOB.get()
        try:
            reply = await self.client.credential(
                str(auth),
                job.command.event_id if job is not None else None,
                job.command.worker_id if job is not None else None,
            )
        except ServerUnreachable as exc:
            raise ToolError(
                f"credential {auth!r}: server unreachable ({exc})", retryable=True
            ) from None
        if reply.status == 404:
            raise ToolError(f"credential {auth!r} does not exist")
        if reply.status != 200:
            raise ToolError(f"credential {auth!r}: HTTP {reply.status} {reply.message}")
        data: dict[str, Any] = reply.body["data"]
        learned(data)
        return data


class ToolRunner:
    def __init__(
        self,
        tools: ToolRegistry,
        credentials: Credentials,
        *,
        grace: float = GRACE,
        results: ResultStore | None = None,
        max_inline_bytes: int = DEFAULT_INLINE_BYTES,
        lend_slot: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        """`results`: where results kept by reference go (a step's `output`, or a result over
        `max_inline_bytes`); without it every result stays inline. `lend_slot`: while a
        pipeline's item waits for its sub-playbook, the worker's slot it holds is lent (the
        worker takes other commands meanwhile: the child's among them)."""
        self.tools = tools
        self.lend_slot = lend_slot or _nothing_lent
        self.credentials = credentials
        self.grace = grace
        self.results = results
        self.max_inline_bytes = max_inline_bytes
        self.keychain = Keychain(credentials.stored)

    async def __call__(self, job: Job) -> Outcome:
        """Run the command's tool or pipeline; every failure becomes a failed Outcome."""
        token = _JOB.set(job)  # the credentials fetched meanwhile are this command's
        try:
            return await self._run(job)
        finally:
            _JOB.reset(token)

    async def _run(self, job: Job) -> Outcome:
        command = job.command
        spec = dict(command.tool)
        kind = str(spec.pop("kind", ""))
        wanted = spec.pop("output", None)  # step (or tool) `output`: select / store

        async def call(
            kind: str, config: dict[str, Any], tool_input: dict[str, Any], item: str
        ) -> Any:
            return await self.call(command, kind, config, tool_input, item)

        variables: dict[str, Any] = {}
        problems: tuple[str, ...] = ()
        try:
            if kind == "pipeline":
                payload = dict(command.input)
                payload["context"] = await self._loaded(payload.get("context"))
                keychain = await self._keychain(command, spec, payload)
                tokens = await self._tokens(command, spec, payload)
                learned(secret_strings({**keychain, "token()": tokens}))
                run = await run_pipeline(
                    spec["items"], payload, call, keychain, bool(spec.get("results"))
                )
                variables, problems = run.variables, tuple(run.problems)
                if not run.ok:
                    error = run.error or "failed"
                    return Outcome.failure(error, problems=problems, error_fields=run.error_fields)
                result = run.data
            else:
                result = await self.call(
                    command, kind, spec, await self._loaded(dict(command.input))
                )
            result = await self._output(job, result, wanted)
        except ToolError as exc:
            fields = semantics.error_fields(failed_call(exc, kind))
            return Outcome.failure(str(exc), problems=problems, error_fields=fields)
        except Exception as exc:  # a bug in a tool must not take the worker down
            log.exception("tool %s crashed on %s", kind, command.command_id)
            return Outcome.failure(f"{type(exc).__name__}: {exc}", problems=problems)
        return Outcome.success(result, variables=variables, problems=problems)

    async def _loaded(self, value: Any) -> Any:
        """`value` with results that travelled by reference loaded (see `result_store`)."""
        return value if self.results is None else await resolve_refs(value, self.results)

    async def _output(self, job: Job, result: Any, wanted: Any) -> Any:
        """The result as reported: inline, or stored with a stub (`output` select/store, or
        larger than the inline limit: `max_inline_bytes`, 64 KiB with an `output` block). An
        inline result's size is noted for the SizeLimit middleware (`RESULT_SIZE`)."""
        command = job.command
        spec: dict[str, Any] = wanted if isinstance(wanted, dict) else {}
        store = spec.get("store")
        kind = str((store.get("kind") if isinstance(store, dict) else store) or "auto")
        if self.results is None:
            if kind != "auto":
                raise ToolError(f"output store {kind!r}: this worker has no result store")
            return result
        default = OUTPUT_INLINE_BYTES if spec else self.max_inline_bytes
        limit = min(int(spec.get("inline_max_bytes", default)), self.max_inline_bytes)
        if kind == "auto":
            size = len(jsonfast.dumps(result))
            if size <= limit:
                job.notes[RESULT_SIZE] = (result, size)
                return result
        stored = await self.results.put(
            result, store=kind, execution_id=command.execution_id, step=command.step
        )
        fields = spec.get("select") or spec.get("output_select")
        return {**select(result, fields), "_ref": stored, "_store": stored["store"]}

    async def _keychain(
        self, command: ClaimedCommand, spec: dict[str, Any], payload: dict[str, Any]
    ) -> dict[str, Any]:
        """The keychain entries the pipeline's templates reference, resolved here."""
        entries = {
            name: {"kind": "credential", "credential": entry} if isinstance(entry, str) else entry
            for name, entry in (payload.get("keychain") or {}).items()
        }
        if not entries:
            return {}
        roots = referenced([spec.get("items"), payload.get("step")])
        context = payload.get("context") or {}
        return await self.keychain.resolve(entries, roots, context, command.execution_id)

    async def _tokens(
        self, command: ClaimedCommand, spec: dict[str, Any], payload: dict[str, Any]
    ) -> dict[str, str]:
        """Upstream's `token(<credential>)` calls in the templates: resolved here, then offered
        to the templates as a function of the context."""
        calls = token_calls([spec.get("items"), payload.get("step")])
        if not calls:
            return {}
        context = payload.get("context") or {}
        tokens = await self.keychain.tokens(calls, context, command.execution_id)

        def token(name: Any) -> str:
            if str(name) not in tokens:
                raise ToolError(f"token({name!r}) was not resolved before the step ran")
            return tokens[str(name)]

        payload["context"] = {**context, "token": token}
        return tokens

    async def call(
        self,
        command: ClaimedCommand,
        kind: str,
        config: dict[str, Any],
        tool_input: dict[str, Any],
        item: str | None = None,
    ) -> Any:
        """One tool call, with its credential and under its time limit; `item`: the label of
        the pipeline item it runs."""
        if kind == "playbook":
            return await self.sub_playbook(command, config, tool_input)
        tool = self.tools.get(kind)
        limit = self.tools.time_limit(kind, config)
        resolving = self._auth(tool, kind, config)
        auth = await resolving if resolving is not None else None
        call = ToolCall(
            kind,
            config,
            tool_input,
            command.execution_id,
            command.step,
            auth,
            timeout=limit,
            item=item,
        )
        # What `asyncio.timeout(limit + grace)` does, at a third of its cost (it is Python: an
        # object, two coroutines, a reschedule): a timer cancels the task, and the
        # cancellation it caused (not another) becomes the timeout.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        cancelling = task.cancelling()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_later(limit + self.grace, expire)
        try:
            return await tool.run(call)
        except asyncio.CancelledError:
            if expired:
                expired = False
                if task.uncancel() <= cancelling:
                    raise ToolError(f"{kind} timed out after {limit:g} s", retryable=True) from None
            raise
        finally:
            timer.cancel()
            if expired:  # the tool went on after its cancellation: it is not left cancelled
                task.uncancel()

    async def sub_playbook(
        self, command: ClaimedCommand, config: dict[str, Any], tool_input: dict[str, Any]
    ) -> Any:
        """A pipeline's `kind: playbook` item: the server starts the child execution for this
        command (its parent), and this worker waits for it within the item's `timeout`
        (CHILD_TIMEOUT by default; past it the child is cancelled and the try fails, retryable).
        The child's payload is the item's `input` over upstream's `payload:`. Its result (or
        `return_step`'s) is the item's data; a failed or cancelled child fails the item."""
        client = self.credentials.client
        limit = timeout_seconds(config, CHILD_TIMEOUT)
        given = config.get("payload")
        body: dict[str, Any] = {
            "payload": {**(given if isinstance(given, dict) else {}), **tool_input}
        }
        for key in ("path", "catalog_id", "version"):
            if config.get(key) not in (None, ""):
                body[key] = config[key]
        name = str(config.get("path") or config.get("catalog_id") or "?")
        _no_secrets(command, name, body["payload"])
        try:
            reply = await client.start_child(command.event_id, body)
        except ServerUnreachable as exc:
            raise ToolError(
                f"sub-playbook {name}: server unreachable ({exc})", retryable=True
            ) from None
        if reply.status != 201:
            raise ToolError(
                f"sub-playbook {name}: HTTP {reply.status} {reply.message}",
                retryable=reply.status >= 500,
            )
        child = str(reply.body["execution_id"])
        async with self.lend_slot():  # else parents waiting in every slot starve their children
            return await self._child_result(command, name, child, config, limit)

    async def _child_result(
        self,
        command: ClaimedCommand,
        name: str,
        child: str,
        config: dict[str, Any],
        limit: float,
    ) -> Any:
        """Wait for the child's end within `limit` seconds (then cancel it)."""
        client = self.credentials.client
        return_step = config.get("return_step")
        deadline = asyncio.get_running_loop().time() + limit
        pause = 0.05
        while True:
            try:
                view = await client.child(command.event_id, child, return_step)
            except ServerUnreachable:
                view = None  # the next look may get through; the deadline still holds
            if view is not None and view.status == 200:
                status = view.body["status"]
                if status == "COMPLETED":
                    return view.body["result"]
                if status != "RUNNING":
                    raise ToolError(
                        f"sub-playbook {name} (execution {child}) {status.lower()}: "
                        f"{view.body['error']}"
                    )
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                with contextlib.suppress(ServerUnreachable):
                    await client.cancel_child(
                        command.event_id, child, f"timed out after {limit:g} s"
                    )
                raise ToolError(
                    f"sub-playbook {name} (execution {child}) timed out after {limit:g} s",
                    retryable=True,
                )
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 1.0)

    def _auth(
        self, tool: Any, kind: str, config: dict[str, Any]
    ) -> Awaitable[dict[str, Any] | None] | None:
        """What resolves the credential data a call needs: `auth` (upstream also says
        `credential`); each side's own `auth` for a transfer. None when there is nothing to
        resolve (most calls: no await), or for a kind that cannot run here."""
        if not getattr(tool, "uses_auth", True):
            return None
        if kind == "transfer":
            return self._sides_auth(config)
        named = config.get("auth") or config.get("credential")
        return None if named is None or named == "" else self.credentials.resolve(named)

    async def _sides_auth(self, config: dict[str, Any]) -> dict[str, Any]:
        return {
            side: await self.credentials.resolve(end.get("auth"))
            for side in ("source", "target")
            if isinstance(end := config.get(side), dict)
        }


def _no_secrets(command: ClaimedCommand, name: str, payload: dict[str, Any]) -> None:
    """A sub-playbook's payload carries no secret the command learned: the child's workload is
    written in clear to its `playbook.initialized` event, its commands and its execution row,
    all readable through the API. Refused, naming the field; the child declares the keychain
    entry (or `auth`) it needs itself, and its worker resolves it."""
    job = _JOB.get()
    mask = Mask(job.notes.get(SECRETS, ()) if job is not None else ())
    for field, value in payload.items():
        if mask.value(value)[1]:
            raise ToolError(
                f"step {command.step}: sub-playbook {name}: input {field!r} holds a secret (a"
                " keychain or credential value); secrets are not passed to a sub-playbook, which"
                f" would store them in clear: declare the keychain entry in {name} itself"
            )


@contextlib.asynccontextmanager
async def _nothing_lent() -> AsyncIterator[None]:
    yield
