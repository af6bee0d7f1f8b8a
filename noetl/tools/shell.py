"""The ``shell`` tool: run commands through ``/bin/sh -c``.

Config: ``command`` (a string) or ``cmds`` (a list of strings run in order, stopping at the
first failure), ``cwd``, ``env`` (merged over the worker's environment; a null value unsets a
variable), ``timeout_seconds`` (alias ``timeout``, default 300, for the whole call).

Each command runs in its own session (process group); on timeout or cancellation the whole
group gets SIGKILL, so the children die too. stdin is /dev/null. Each stream keeps at most
1 MiB (its start and its end). Result: ``{"exit_code", "stdout", "stderr"}``; for ``cmds``
those of the last command run plus ``"steps"``, one such object (with ``command``) per
command. A non-zero exit is a ToolError whose details hold the result. Each command's
stdout and stderr are also recorded as the command's output (``noetl.tools.output``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from noetl.tools import output
from noetl.tools.base import ToolCall, ToolError

logger = logging.getLogger(__name__)

SHELL = "/bin/sh"
DEFAULT_TIMEOUT = 300.0
MAX_CAPTURED_BYTES = 1024 * 1024
"""Per stream; past it the first part and the last ``_TAIL_BYTES`` are kept."""
_TAIL_BYTES = 64 * 1024
_ERROR_TAIL_CHARS = 500
_REAP_SECONDS = 5.0
_CHUNK = 64 * 1024


class ShellTool:
    """Runs shell commands; see the module docstring."""

    kind = "shell"
    default_timeout = DEFAULT_TIMEOUT

    async def run(self, call: ToolCall) -> Any:
        commands, several = _commands(call.config)
        cwd = _cwd(call.config.get("cwd"))
        env = _env(call.config.get("env"))
        timeout = call.time_limit(DEFAULT_TIMEOUT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        steps: list[dict[str, Any]] = []
        for index, command in enumerate(commands, start=1):
            remaining = deadline - loop.time()
            step = await _run_one(command, cwd, env, remaining, timeout)
            steps.append(step)
            output.record("stdout", step["stdout"])
            output.record("stderr", step["stderr"])
            logger.debug(
                "shell step %s: command %d/%d exited with %s",
                call.step,
                index,
                len(commands),
                step["exit_code"],
            )
            if step["exit_code"] != 0:
                result = _result(steps, several)
                where = f"command {index} of {len(commands)}" if several else "shell command"
                raise ToolError(_failure(where, step), details=result)
        return _result(steps, several)


async def _run_one(
    command: str, cwd: str | None, env: dict[str, str], remaining: float, limit: float
) -> dict[str, Any]:
    """Run one command with ``remaining`` seconds left of the call's ``limit``."""
    if remaining <= 0:
        raise _timed_out(limit)
    try:
        process = await asyncio.create_subprocess_exec(
            SHELL,
            "-c",
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise ToolError(f"could not start {SHELL}: {exc}") from None
    stdout, stderr = _Capture(), _Capture()

    async def finish() -> int:
        assert process.stdout is not None and process.stderr is not None
        await asyncio.gather(stdout.drain(process.stdout), stderr.drain(process.stderr))
        return await process.wait()

    try:
        exit_code = await asyncio.wait_for(finish(), remaining)
    except TimeoutError:
        await _kill_group(process)
        raise _timed_out(limit) from None
    except asyncio.CancelledError:
        _signal_group(process)
        raise
    return {
        "command": command,
        "exit_code": exit_code,
        "stdout": stdout.text(),
        "stderr": stderr.text(),
    }


def _result(steps: list[dict[str, Any]], several: bool) -> dict[str, Any]:
    last = steps[-1]
    result = {key: last[key] for key in ("exit_code", "stdout", "stderr")}
    if several:
        result["steps"] = steps
    return result


def _failure(where: str, step: Mapping[str, Any]) -> str:
    code = step["exit_code"]
    status = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    output = step["stderr"].strip() or step["stdout"].strip()
    message = f"{where} {status}"
    return f"{message}: {output[-_ERROR_TAIL_CHARS:]}" if output else message


def _timed_out(timeout: float) -> ToolError:
    return ToolError(f"shell command timed out after {timeout:g} s", retryable=True)


def _signal_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the command's process group (its pid: it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    _signal_group(process)
    try:
        await asyncio.wait_for(process.wait(), _REAP_SECONDS)
    except TimeoutError:
        logger.warning("shell process %d did not exit after SIGKILL", process.pid)


class _Capture:
    """One stream's bytes: the first part up to the limit, then a rolling tail."""

    def __init__(self, limit: int = MAX_CAPTURED_BYTES, tail: int = _TAIL_BYTES) -> None:
        self._head = bytearray()
        self._tail = bytearray()
        self._head_limit = limit - tail
        self._tail_limit = tail
        self._dropped = 0

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_CHUNK):
            self.add(chunk)

    def add(self, chunk: bytes) -> None:
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self._tail += chunk
        excess = len(self._tail) - self._tail_limit
        if excess > 0:
            del self._tail[:excess]
            self._dropped += excess

    def text(self) -> str:
        head = self._head.decode("utf-8", errors="replace")
        tail = self._tail.decode("utf-8", errors="replace")
        if self._dropped:
            return f"{head}\n[... {self._dropped} bytes not captured ...]\n{tail}"
        return head + tail


def _commands(config: Mapping[str, Any]) -> tuple[list[str], bool]:
    """The commands to run and whether they came as a list (``cmds``)."""
    cmds, command = config.get("cmds"), config.get("command")
    if cmds is not None and command is not None:
        raise ToolError("shell tool takes `command` or `cmds`, not both")
    raw = cmds if cmds is not None else command
    if isinstance(raw, str) and raw.strip():
        return [raw], False
    if isinstance(raw, list) and raw and all(isinstance(item, str) for item in raw):
        return list(raw), True
    raise ToolError("shell tool needs `command` (a string) or `cmds` (a list of strings)")


def _cwd(raw: Any) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str | Path):
        raise ToolError(f"cwd must be a directory path, got {type(raw).__name__}")
    if not Path(raw).is_dir():
        raise ToolError(f"cwd {str(raw)!r} is not a directory")
    return str(raw)


def _env(raw: Any) -> dict[str, str]:
    env = dict(os.environ)
    if raw is None:
        return env
    if not isinstance(raw, Mapping):
        raise ToolError(f"env must be a mapping of names to values, got {type(raw).__name__}")
    for name, value in raw.items():
        if value is None:
            env.pop(str(name), None)
        elif isinstance(value, bool):
            env[str(name)] = "true" if value else "false"
        else:
            env[str(name)] = str(value)
    return env
