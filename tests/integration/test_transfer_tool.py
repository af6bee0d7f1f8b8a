"""The transfer tool: http -> postgres (mapping), postgres -> duckdb, duckdb -> http, on the
real PostgreSQL and a local HTTP server; cloud types fail naming the service."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiohttp import web

from noetl.config import Settings
from noetl.tools import ToolCall, ToolError
from noetl.tools.transfer import TransferTool
from tests.conftest import Services, run_playbook

POSTS = [
    {"userId": i % 3, "id": i, "title": f"t{i}", "body": "b", "tags": ["x"]} for i in range(25)
]
RECEIVED: list[Any] = []


async def _posts(_: web.Request) -> web.Response:
    return web.json_response(POSTS)


async def _wrapped(_: web.Request) -> web.Response:
    return web.json_response({"meta": {"n": 2}, "page": {"items": POSTS[:2]}})


async def _sink(request: web.Request) -> web.Response:
    RECEIVED.append(await request.json())
    return web.json_response({"ok": True})


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/posts", _posts)
    app.router.add_get("/wrapped", _wrapped)
    app.router.add_post("/sink", _sink)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture(scope="module")
def database_url(services: Services) -> Iterator[str]:
    name = f"noetl_transfer_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(services.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = services.database_url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE posts (post_id int, user_id int, title text, tags jsonb)")
    yield url
    with psycopg.connect(services.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _transfer(auth: dict[str, Any] | None = None, **config: Any) -> Any:
    return await TransferTool().run(ToolCall("transfer", config, {}, 1, "step", auth))


async def test_http_to_postgres_with_a_mapping_then_postgres_to_duckdb_to_http(
    base_url: str, database_url: str, tmp_path: Path
) -> None:
    mapping = {"post_id": "id", "user_id": "userId", "title": "title", "tags": "tags"}
    target = {"type": "postgres", "table": "public.posts", "mapping": mapping}
    result = await _transfer(
        {"target": {"dsn": database_url}},
        source={"type": "http", "url": f"{base_url}/posts"},
        target=target,
        chunk_size=10,
    )
    assert (result["rows_read"], result["rows_written"]) == (25, 25)
    await _transfer(  # replace: the table holds the two rows, not 27
        {"target": {"dsn": database_url}},
        source={"type": "http", "url": f"{base_url}/wrapped", "data_path": "page.items"},
        target=target,
        mode="replace",
    )
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT post_id, user_id, tags FROM posts ORDER BY post_id").fetchall()
    assert rows == [(0, 0, ["x"]), (1, 1, ["x"])]
    db = str(tmp_path / "copy.duckdb")
    import duckdb

    with duckdb.connect(db) as conn:
        conn.execute("CREATE TABLE copy (post_id INTEGER, title VARCHAR)")
    copied = await _transfer(
        {"source": {"dsn": database_url}},
        source={"type": "postgres", "query": "SELECT post_id, title FROM posts"},
        target={"type": "duckdb", "db_path": db, "table": "copy"},
    )
    assert copied["rows_written"] == 2
    RECEIVED.clear()
    sent = await _transfer(
        source={"type": "duckdb", "db_path": db, "query": "SELECT * FROM copy ORDER BY post_id"},
        target={"type": "http", "url": f"{base_url}/sink"},
        chunk_size=1,
    )
    assert sent["rows_written"] == 2
    assert RECEIVED == [[{"post_id": 0, "title": "t0"}], [{"post_id": 1, "title": "t1"}]]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"source": {"type": "snowflake", "query": "q"}, "target": {"type": "postgres"}},
            "transfer source type 'snowflake' needs a Snowflake account",
        ),
        ({"source": {"type": "http"}, "target": {"type": "postgres"}}, "needs `url`"),
        ({"source": {"type": "ftp"}, "target": {"type": "duckdb"}}, "not supported"),
        ({"target": {"type": "duckdb"}}, "needs `source`"),
        (
            {"source": {"type": "duckdb", "query": "SELECT 1 AS a"}, "target": {"type": "duckdb"}},
            "needs `table`",
        ),
    ],
)
async def test_bad_transfers_fail_with_a_clear_error(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolError, match=message.replace("(", r"\(").replace(")", r"\)")):
        await _transfer(**config)


async def test_a_playbook_transfer_resolves_each_sides_credential(
    api: httpx.AsyncClient, settings: Settings, base_url: str
) -> None:
    credential = {"name": "pg_target", "type": "postgres", "data": {"dsn": settings.database_url}}
    assert (await api.post("/api/credentials", json=credential)).status_code == 201
    playbook = f"""
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: transfer_pb, path: tests/transfer_pb}}
workflow:
  - step: start
    tool: {{kind: postgres, auth: pg_target, command: "CREATE TABLE t (id int, title text)"}}
    next: [copy]
  - step: copy
    tool:
      kind: transfer
      source: {{type: http, url: "{base_url}/posts", method: GET}}
      target:
        {{type: postgres, auth: pg_target, table: public.t, mapping: {{id: id, title: title}}}}
    next: [count]
  - step: count
    tool: {{kind: postgres, auth: pg_target, command: "SELECT count(*) AS n FROM t"}}
"""
    execution = await run_playbook(api, playbook)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"]["rows"] == [{"n": 25}]
    assert json.dumps(execution["result"])  # plain JSON
