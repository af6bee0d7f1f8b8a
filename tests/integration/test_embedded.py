"""Embedded PostgreSQL and NATS JetStream are real servers that start, stop and restart."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import nats
import psycopg
import pytest
from nats.js.api import StorageType

from noetl.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedServices
from noetl.embedded import postgres as postgres_module
from noetl.embedded.postgres import _folder_lock, _is_postgres_on


@pytest.mark.timeout(60)
def test_embedded_postgres_answers_select_1(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres.start(tmp_path / "pg")
    try:
        with psycopg.connect(postgres.url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        postgres.stop()


@pytest.mark.timeout(60)
def test_embedded_postgres_creates_a_database_once(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres.start(tmp_path / "pg")
    try:
        url = postgres.create_database("noetl_test")
        assert postgres.create_database("noetl_test") == url
        with psycopg.connect(url) as conn:
            assert conn.execute("select current_database()").fetchone() == ("noetl_test",)
    finally:
        postgres.stop()


@pytest.mark.timeout(60)
def test_embedded_postgres_stop_stops_the_server_and_is_idempotent(tmp_path: Path) -> None:
    postgres = EmbeddedPostgres.start(tmp_path / "pg")
    url = postgres.url
    postgres.stop()
    postgres.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)


@pytest.mark.timeout(60)
@pytest.mark.asyncio
async def test_jetstream_stream_survives_a_restart_on_the_same_port(tmp_path: Path) -> None:
    server = EmbeddedNats.start(tmp_path / "nats")
    try:
        client = await nats.connect(server.url)
        js = client.jetstream()
        await js.add_stream(name="EMBEDDED", subjects=["embedded.>"], storage=StorageType.FILE)
        await js.publish("embedded.one", b"hello")
        reader = await js.pull_subscribe("embedded.>", durable="reader", stream="EMBEDDED")
        [message] = await reader.fetch(1, timeout=5)
        assert message.data == b"hello"
        await message.ack()
        await client.close()

        port = server.port
        server.stop()
        server.restart()
        assert server.port == port

        client = await nats.connect(server.url)
        info = await client.jetstream().stream_info("EMBEDDED")
        assert info.state.messages == 1
        await client.close()
    finally:
        server.stop()


@pytest.mark.timeout(60)
def test_nats_that_cannot_listen_fails_with_its_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="exited with code") as caught:
            EmbeddedNats.start(tmp_path / "nats", port=port)
    assert "address already in use" in str(caught.value)


@pytest.mark.timeout(60)
def test_embedded_services_start_both_under_one_folder(tmp_path: Path) -> None:
    with EmbeddedServices.start(tmp_path) as services:
        assert services.postgres.data_dir == (tmp_path / "pg").resolve()
        assert services.nats.store_dir == (tmp_path / "nats").resolve()
        with psycopg.connect(services.postgres.url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        with socket.create_connection(("127.0.0.1", services.nats.port), timeout=2):
            pass
    assert not services.nats.running


@pytest.mark.timeout(60)
def test_a_leftover_nats_on_the_same_store_is_stopped_first(tmp_path: Path) -> None:
    leftover = EmbeddedNats.start(tmp_path / "nats")
    try:
        fresh = EmbeddedNats.start(tmp_path / "nats")
        try:
            assert not leftover.running
            assert fresh.running
        finally:
            fresh.stop()
    finally:
        leftover.stop()


@pytest.mark.timeout(120)
def test_a_postgres_left_by_a_killed_process_is_joined_then_stopped(tmp_path: Path) -> None:
    """`noetl run` killed with SIGKILL leaves its postgres running: the next start in the
    same folder uses it, and its stop leaves no postgres behind."""
    data = tmp_path / "pg"
    owner = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys\n"
            "from pathlib import Path\n"
            "from noetl.embedded import EmbeddedPostgres\n"
            "postgres = EmbeddedPostgres.start(Path(sys.argv[1]))\n"
            "print(postgres.pid, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n",
            str(data),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    leftover = int(owner.stdout)
    assert _is_postgres_on(leftover, data.resolve())
    postgres = EmbeddedPostgres.start(data)
    try:
        assert postgres.pid == leftover
        with psycopg.connect(postgres.url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        postgres.stop()
    assert not _is_postgres_on(leftover, data.resolve())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("proc", [True, False], ids=["linux", "no-proc"])
def test_postgres_of_one_folder_is_used_by_all_and_stopped_by_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proc: bool
) -> None:
    data = tmp_path / "pg"
    no_proc = "" if proc else str(tmp_path / "no-proc")
    if no_proc:  # as on macOS: a server is recognised by its pid alone
        monkeypatch.setattr(postgres_module, "_PROC", Path(no_proc))
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from pathlib import Path\n"
            "from noetl.embedded import EmbeddedPostgres, postgres as module\n"
            "if sys.argv[2]:\n"
            "    module._PROC = Path(sys.argv[2])\n"
            "postgres = EmbeddedPostgres.start(Path(sys.argv[1]))\n"
            "print(postgres.pid, flush=True)\n"
            "sys.stdin.read()\n"
            "postgres.stop()\n",
            str(data),
            no_proc,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert other.stdin is not None and other.stdout is not None
    shared = int(other.stdout.readline())
    postgres = EmbeddedPostgres.start(data)
    assert postgres.pid == shared
    postgres.stop()  # the other process still uses it
    assert _is_postgres_on(shared, data.resolve())
    other.stdin.close()
    assert other.wait() == 0
    assert not _is_postgres_on(shared, data.resolve())


@pytest.mark.timeout(120)
def test_a_folder_being_started_does_not_hold_up_another(tmp_path: Path) -> None:
    """The lock is per data folder (pgserver's one lock for all of a user's folders made
    every start and stop on the machine wait for any initdb)."""
    with _folder_lock((tmp_path / "busy").resolve()):
        postgres = EmbeddedPostgres.start(tmp_path / "free")
        postgres.stop()


@pytest.mark.timeout(120)
def test_postgres_initialises_where_there_is_no_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS has no /proc: a fresh folder still initialises (its scan of /proc raised)."""
    monkeypatch.setattr(postgres_module, "_PROC", tmp_path / "no-proc")
    postgres = EmbeddedPostgres.start(tmp_path / "pg")
    try:
        assert EmbeddedPostgres.start(tmp_path / "pg") is postgres  # one process, one user
        with psycopg.connect(postgres.url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        postgres.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.url, connect_timeout=2)
