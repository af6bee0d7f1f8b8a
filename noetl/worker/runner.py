"""The actor at the centre of the worker's middleware: run a claimed command's tool, or its
pipeline of tools, and turn whatever happens into an Outcome.

Every tool call goes through `call`: the credential named by `auth` is fetched right before
the run, and the one timeout rule applies (`ToolRegistry.time_limit`: the tool's
`timeout_seconds`, else the kind's default). Tools that can stop their work precisely do so at
that limit themselves; for any other tool the runner stops waiting a moment later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from noetl.protocol.command import ClaimedCommand
from noetl.protocol.outcome import Outcome
from noetl.tools import output
from noetl.tools.base import ToolCall, ToolError
from noetl.tools.registry import ToolRegistry
from noetl.worker.client import ServerClient, ServerUnreachable
from noetl.worker.middleware import Job
from noetl.worker.pipeline import run_pipeline

log = logging.getLogger(__name__)

GRACE = 2.0  # seconds a tool gets past its limit to stop itself before the runner gives up


class Credentials:
    """The data of a credential a tool names in `auth`, fetched from the server."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client

    async def resolve(self, auth: Any) -> dict[str, Any] | None:
        if auth is None or auth == "":
            return None
        if isinstance(auth, dict):
            output.remember_secret(auth)
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
        output.remember_secret(data)  # masked out of what the tools print
        return data


class ToolRunner:
    def __init__(
        self, tools: ToolRegistry, credentials: Credentials, *, grace: float = GRACE
    ) -> None:
        self.tools = tools
        self.credentials = credentials
        self.grace = grace

    async def __call__(self, job: Job) -> Outcome:
        """Run the command's tool or pipeline; every failure becomes a failed Outcome."""
        command = job.command
        spec = dict(command.tool)
        kind = str(spec.pop("kind", ""))

        async def call(kind: str, config: dict[str, Any], tool_input: dict[str, Any]) -> Any:
            return await self.call(command, kind, config, tool_input)

        variables: dict[str, Any] = {}
        problems: tuple[str, ...] = ()
        try:
            if kind == "pipeline":
                payload = command.input
                keychain = {
                    name: await self.credentials.resolve(credential)
                    for name, credential in (payload.get("keychain") or {}).items()
                }
                run = await run_pipeline(spec["items"], payload, call, keychain)
                variables, problems = run.variables, tuple(run.problems)
                if not run.ok:
                    raise ToolError(run.error or "failed")
                result = run.data
            else:
                result = await call(kind, spec, dict(command.input))
        except ToolError as exc:
            return Outcome.failure(str(exc), problems=problems)
        except Exception as exc:  # a bug in a tool must not take the worker down
            log.exception("tool %s crashed on %s", kind, command.command_id)
            return Outcome.failure(f"{type(exc).__name__}: {exc}", problems=problems)
        return Outcome.success(result, variables=variables, problems=problems)

    async def call(
        self, command: ClaimedCommand, kind: str, config: dict[str, Any], tool_input: dict[str, Any]
    ) -> Any:
        """One tool call, with its credential and under its time limit."""
        tool = self.tools.get(kind)
        limit = self.tools.time_limit(kind, config)
        auth = await self.credentials.resolve(config.get("auth"))
        call = ToolCall(
            kind, config, tool_input, command.execution_id, command.step, auth, timeout=limit
        )
        try:
            async with asyncio.timeout(limit + self.grace) as guard:
                return await tool.run(call)
        except TimeoutError:
            if guard.expired():
                raise ToolError(f"{kind} timed out after {limit:g} s", retryable=True) from None
            raise
