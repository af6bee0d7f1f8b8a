"""A real PostgreSQL for local runs and tests: the binaries of the PyPI package pgserver, run
by this module.

pgserver's own start and stop cost `noetl run` most of a second, and more on a shared
machine: `pg_ctl -w` looks at the server every 0.1 s, and every start and stop of every data
folder of the user waits on one machine-wide lock (held through a whole `initdb`). Here the
postmaster is started directly and watched every few milliseconds, the lock is per data
folder, and the folder layout stays pgserver's: the server listens on a unix socket only
(in the data folder when the path is short enough), a `.handle_pids.json` in the data folder
lists the processes using it (the last one to stop stops it), and run as root, postgres runs
as the `pgserver` system user (created when missing).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import logging
import os
import pwd
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

SYSTEM_USER = "pgserver"  # postgres refuses to run as root
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0  # a fast shutdown, then an immediate one, then SIGKILL
_POLL_SECONDS = 0.005
_MAX_SOCKET_PATH = 100  # bytes; the kernel's limit for a unix socket path is 107
_LOG_TAIL_CHARS = 4000


_STARTED: dict[Path, EmbeddedPostgres] = {}  # by data folder: the servers this process uses
_STARTED_LOCK = threading.Lock()


@functools.cache
def binaries() -> Path:
    """The bin folder of pgserver's PostgreSQL (found without importing pgserver)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("PostgreSQL binaries not found; run `pip install pgserver`")
    folder = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (folder / "postgres").is_file():
        raise RuntimeError(f"no postgres in {folder}: this pgserver's layout is not known")
    return folder


class EmbeddedPostgres:
    """A PostgreSQL server for data_dir (initialised on first use), shared by the processes
    that start it for the same folder and stopped by the last of them to stop."""

    def __init__(self, data_dir: Path, socket_dir: Path, pid: int) -> None:
        self.data_dir = data_dir
        self.socket_dir = socket_dir
        self.pid = pid  # the postmaster's
        self.url = self.uri("postgres")
        self._process: subprocess.Popen[bytes] | None = None  # when this process started it
        self._syncing: subprocess.Popen[bytes] | None = None  # initdb --sync-only, first run
        self._stopped = False

    @classmethod
    def start(cls, data_dir: Path) -> EmbeddedPostgres:
        """Start (or initialise and start, or join the running) server of data_dir."""
        data_dir = data_dir.expanduser().resolve()
        with _STARTED_LOCK:
            mine = _STARTED.get(data_dir)
        if mine is not None:  # one process is one user of a server
            return mine
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        user = SYSTEM_USER if os.geteuid() == 0 else None
        with _folder_lock(data_dir):
            syncing = None
            if user is not None:
                _make_reachable(data_dir, user)
            if not (data_dir / "PG_VERSION").exists():
                syncing = _initdb(data_dir, user)
            postgres = cls._running(data_dir) or cls._spawn(data_dir, user)
            postgres._syncing = syncing
            _Handles(data_dir).add(os.getpid())
        with _STARTED_LOCK:
            _STARTED[data_dir] = postgres
        atexit.register(postgres.stop)
        logger.info(
            "embedded postgres ready in %.2f s at %s", time.monotonic() - started, postgres.url
        )
        return postgres

    def uri(self, database: str) -> str:
        return f"postgresql://postgres:@/{database}?host={self.socket_dir}"

    def create_database(self, name: str) -> str:
        """Create database name unless it exists; return its URI."""
        import psycopg
        from psycopg import sql

        self._require_running()
        with psycopg.connect(self.url, autocommit=True) as conn:
            found = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                logger.info("created database %s", name)
        return self.uri(name)

    def stop(self) -> None:
        """Stop the server unless another live process still uses it; safe to call more than
        once."""
        atexit.unregister(self.stop)
        if self._stopped:
            return
        self._stopped = True
        with _STARTED_LOCK:
            if _STARTED.get(self.data_dir) is self:
                del _STARTED[self.data_dir]
        if self._syncing is not None:
            self._syncing.wait()
        if not self.data_dir.exists():  # deleted under it: nobody else can use it
            self._shut_down()
            return
        with _folder_lock(self.data_dir):
            if _Handles(self.data_dir).remove(os.getpid()):
                logger.info("embedded postgres left running for its other users")
                return
            self._shut_down()
        logger.info("embedded postgres stopped (%s)", self.data_dir)

    def _require_running(self) -> None:
        if self._stopped:
            raise RuntimeError("embedded postgres is stopped")

    def _shut_down(self) -> None:
        """Fast shutdown (sessions ended, a checkpoint); immediate, then SIGKILL, if slow."""
        for sig, grace in (
            (signal.SIGINT, STOP_TIMEOUT_SECONDS),
            (signal.SIGQUIT, 5.0),
            (signal.SIGKILL, 5.0),
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not self._alive():
                    return
                time.sleep(_POLL_SECONDS)
            logger.warning("postgres pid %s still running after %s", self.pid, sig.name)
        raise RuntimeError(f"postgres pid {self.pid} on {self.data_dir} did not stop")

    def _alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None  # also reaps it
        return _is_postgres_on(self.pid, self.data_dir)

    @classmethod
    def _running(cls, data_dir: Path) -> EmbeddedPostgres | None:
        """The server already running on data_dir (another process's, or one a killed
        process left), once it is ready; None when there is none."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            info = _postmaster_info(data_dir)
            if info is None or not _is_postgres_on(info.pid, data_dir):
                return None
            if info.status == "ready":
                logger.info("joining the running postgres pid %s on %s", info.pid, data_dir)
                return cls(data_dir, info.socket_dir, info.pid)
            if time.monotonic() > deadline:  # starting or stopping for too long
                raise RuntimeError(f"postgres pid {info.pid} on {data_dir} is {info.status}")
            time.sleep(_POLL_SECONDS)

    @classmethod
    def _spawn(cls, data_dir: Path, user: str | None) -> EmbeddedPostgres:
        socket_dir = _socket_dir(data_dir, user)
        log_file = data_dir / "log"
        log_offset = log_file.stat().st_size if log_file.exists() else 0
        command = [
            str(binaries() / "postgres"),
            "-D",
            str(data_dir),
            "-h",
            "",
            "-k",
            str(socket_dir),
        ]
        with log_file.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - pgserver's binary, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C goes to noetl, which stops it in order
                user=user,
            )
        postgres = cls(data_dir, socket_dir, process.pid)
        postgres._process = process
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            code = process.poll()
            if code is not None:
                raise RuntimeError(
                    f"postgres exited with code {code} during startup; log tail:\n"
                    f"{log_tail(log_file, log_offset)}"
                )
            info = _postmaster_info(data_dir)
            if info is not None and info.pid == process.pid and info.status == "ready":
                return postgres
            if time.monotonic() > deadline:
                postgres._shut_down()
                raise RuntimeError(
                    f"postgres was not ready within {START_TIMEOUT_SECONDS:g} s; log tail:\n"
                    f"{log_tail(log_file, log_offset)}"
                )
            time.sleep(_POLL_SECONDS)


class _PostmasterInfo:
    """What postmaster.pid says: pid, socket folder, status (starting, ready, stopping)."""

    def __init__(self, pid: int, socket_dir: Path, status: str) -> None:
        self.pid = pid
        self.socket_dir = socket_dir
        self.status = status


def _postmaster_info(data_dir: Path) -> _PostmasterInfo | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        return _PostmasterInfo(int(lines[0]), Path(lines[4].strip()), lines[7].strip())
    except (OSError, ValueError, IndexError):  # absent, or being written
        return None


_PROC = Path("/proc")


def _is_postgres_on(pid: int, data_dir: Path) -> bool:
    """True if pid is a live (not zombie) postgres serving data_dir. Without /proc (macOS):
    if pid is alive, as pgserver judged."""
    if not (_PROC / "self").exists():
        return _pid_alive(pid)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return (
        state != b"Z"
        and Path(os.fsdecode(argv[0])).name == "postgres"
        and os.fsencode(data_dir) in argv
    )


def _initdb(data_dir: Path, user: str | None) -> subprocess.Popen[bytes]:
    """A new cluster. initdb's final flush to disk (half a second here) runs afterwards in
    the background, while the server starts: the returned process; `stop` waits for it."""
    for pid in _postgres_pids_on(data_dir):  # a server whose folder was deleted under it
        logger.warning("stopping postgres pid %s left on the deleted %s", pid, data_dir)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    data_dir.mkdir(exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    initdb = str(binaries() / "initdb")
    done = subprocess.run(  # noqa: S603 - pgserver's binary, no shell
        [initdb, "-D", str(data_dir), "--auth=trust", "--auth-local=trust", "--encoding=utf8",
         "-U", "postgres", "--no-sync", "--no-instructions"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        user=user,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"initdb failed with code {done.returncode}:\n"
            f"{(done.stdout + done.stderr).decode(errors='replace')[-_LOG_TAIL_CHARS:]}"
        )
    return subprocess.Popen(  # noqa: S603
        [initdb, "--sync-only", "-D", str(data_dir)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        user=user,
    )


def _postgres_pids_on(data_dir: Path) -> list[int]:
    """Postgres processes on data_dir (Linux /proc; none found elsewhere)."""
    if not (_PROC / "self").exists():
        return []
    return [
        int(entry.name)
        for entry in _PROC.iterdir()
        if entry.name.isdigit() and _is_postgres_on(int(entry.name), data_dir)
    ]


def _socket_dir(data_dir: Path, user: str | None) -> Path:
    """The data folder, unless its socket path would be too long for the kernel."""
    if len(os.fsencode(data_dir / ".s.PGSQL.5432")) <= _MAX_SOCKET_PATH:
        return data_dir
    digest = hashlib.sha256(f"{data_dir}-{data_dir.stat().st_ino}".encode()).hexdigest()[:10]
    folder = Path(tempfile.gettempdir()) / "noetl-postgres" / digest
    folder.mkdir(parents=True, exist_ok=True)
    if user is not None:
        folder.parent.chmod(0o755)
        folder.chmod(0o777)
    return folder


def _make_reachable(data_dir: Path, user: str) -> None:
    """Run as root: the system user exists and can reach the data folder and the binaries
    (pytest, for one, narrows /tmp/pytest-of-root to 0700 at each session)."""
    try:
        pwd.getpwnam(user)
    except KeyError:
        useradd = ["useradd", "-s", "/bin/bash", user]
        subprocess.run(useradd, check=True, capture_output=True)  # noqa: S603
    traverse = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    read = stat.S_IRGRP | stat.S_IROTH
    bin_dir = binaries()
    for folder in (data_dir.parent, bin_dir):
        for parent in (folder, *folder.parents):
            _widen(parent, traverse)
    for folder, files in ((bin_dir, traverse), (bin_dir.parent / "lib", read)):
        for root, dirs, names in os.walk(folder):
            for name in dirs:
                _widen(Path(root, name), traverse)
            for name in names:
                _widen(Path(root, name), files)


def _widen(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(mode | bits)


@contextlib.contextmanager
def _folder_lock(data_dir: Path) -> Iterator[None]:
    """One process at a time initialises, starts or stops the server of data_dir."""
    lock = data_dir.parent / f".{data_dir.name}.lock"
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Handles:
    """The pids of the processes using the server of data_dir (pgserver's file and format)."""

    def __init__(self, data_dir: Path) -> None:
        self.file = data_dir / ".handle_pids.json"

    def add(self, pid: int) -> None:
        self._write([*self._alive_others(pid), pid])

    def remove(self, pid: int) -> list[int]:
        """Drop pid; return the live processes still using the server."""
        others = self._alive_others(pid)
        self._write(others)
        return others

    def _alive_others(self, pid: int) -> list[int]:
        try:
            pids = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(pids, list):
            return []
        return [p for p in pids if isinstance(p, int) and p != pid and _pid_alive(p)]

    def _write(self, pids: list[int]) -> None:
        with contextlib.suppress(FileNotFoundError):  # the folder was deleted
            self.file.write_text(json.dumps(pids))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_tail(log_file: Path, offset: int) -> str:
    """What a log file got since offset (its last few thousand characters)."""
    try:
        with log_file.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return text[-_LOG_TAIL_CHARS:].strip() or "(log empty)"
