"""Embedded PostgreSQL and NATS JetStream are real servers that start, stop and restart."""

from __future__ import annotations

import socket
from pathlib import Path

import nats
import psycopg
import pytest
from nats.js.api import StorageType

from noetl.embedded import EmbeddedNats, EmbeddedPostgres, EmbeddedServices


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
