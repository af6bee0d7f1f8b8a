"""The postgres tool on a real PostgreSQL (the session's `services`), in a database of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import psycopg
import pytest

from noetl.tools import ToolCall, ToolError, close_tools, get_tool
from noetl.tools.postgres import PostgresTool
from tests.conftest import Services


def final(result: dict[str, Any]) -> dict[str, Any]:
    """The result without upstream's per-statement `command_<i>` entries."""
    return {k: v for k, v in result.items() if not k.startswith("command_")}


@pytest.fixture(scope="module")
def database_url(services: Services) -> Iterator[str]:
    name = f"noetl_pgtool_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(services.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield services.database_url(name)
    with psycopg.connect(services.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
async def tool() -> AsyncIterator[PostgresTool]:
    value = PostgresTool()
    yield value
    await value.close()


def url_fields(url: str) -> dict[str, Any]:
    """user/password/host/port/database of a URL; the host may be a unix socket directory."""
    parts = urlparse(url)
    query = parse_qs(parts.query)
    fields: dict[str, Any] = {
        "host": query["host"][0] if "host" in query else parts.hostname,
        "port": parts.port or (int(query["port"][0]) if "port" in query else None),
        "user": unquote(parts.username or "") or None,
        "password": unquote(parts.password or "") or None,
        "database": parts.path.lstrip("/"),
    }
    return {key: value for key, value in fields.items() if value is not None}


async def run_sql(
    tool: PostgresTool, database_url: str, query: str, **config: Any
) -> dict[str, Any]:
    call = ToolCall(
        "postgres", {"query": query, **config}, {}, 1, "step", auth={"dsn": database_url}
    )
    result: dict[str, Any] = await tool.run(call)
    return result


async def sql_error(tool: PostgresTool, database_url: str, query: str, **config: Any) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await run_sql(tool, database_url, query, **config)
    return caught.value


@pytest.mark.timeout(60)
async def test_create_insert_with_params_and_select_returns_rows_as_objects(
    tool: PostgresTool, database_url: str
) -> None:
    created = await run_sql(tool, database_url, "CREATE TABLE people (id int, name text)")
    assert final(created) == {"affected_rows": 0}
    positional = await run_sql(
        tool, database_url, "INSERT INTO people VALUES (%s, %s)", params=[1, "Robert'); DROP"]
    )
    assert final(positional) == {"affected_rows": 1}
    named = await run_sql(
        tool,
        database_url,
        "INSERT INTO people VALUES (%(id)s, %(name)s)",
        params={"id": 2, "name": "Ann"},
    )
    assert final(named) == {"affected_rows": 1}
    result = await run_sql(
        tool, database_url, "SELECT id, name FROM people WHERE id >= %s ORDER BY id", params=[1]
    )
    assert final(result) == {
        "columns": ["id", "name"],
        "rows": [{"id": 1, "name": "Robert'); DROP"}, {"id": 2, "name": "Ann"}],
        "row_count": 2,
    }


@pytest.mark.timeout(60)
async def test_a_multi_statement_command_returns_the_rows_of_its_select(
    tool: PostgresTool, database_url: str
) -> None:
    result = await tool.run(
        ToolCall(
            "postgres",
            {
                "command": "CREATE TABLE multi (n int, label text); "
                "INSERT INTO multi VALUES (1, '100%'), (2, 'semi;colon'); "
                "SELECT n, label FROM multi ORDER BY n;",
                "pool": {"max_size": 3},
            },
            {},
            1,
            "step",
            auth={"dsn": database_url},
        )
    )
    assert result["rows"] == [{"n": 1, "label": "100%"}, {"n": 2, "label": "semi;colon"}]
    assert result["row_count"] == 2


@pytest.mark.timeout(60)
async def test_writes_report_affected_rows_summed_over_the_statements(
    tool: PostgresTool, database_url: str
) -> None:
    await run_sql(tool, database_url, "CREATE TABLE counts (n int)")
    inserted = await run_sql(tool, database_url, "INSERT INTO counts SELECT generate_series(1, 5)")
    assert final(inserted) == {"affected_rows": 5}
    changed = await run_sql(
        tool,
        database_url,
        "UPDATE counts SET n = n + 10 WHERE n <= 3; DELETE FROM counts WHERE n = 5",
    )
    assert final(changed) == {"affected_rows": 4}


@pytest.mark.timeout(60)
async def test_a_syntax_error_fails_with_the_servers_message(
    tool: PostgresTool, database_url: str
) -> None:
    error = await sql_error(tool, database_url, "SELECT FROM FROM nowhere")
    assert 'syntax error at or near "FROM"' in str(error)
    assert error.details["sqlstate"] == "42601"
    assert not error.retryable


@pytest.mark.timeout(60)
async def test_an_error_rolls_back_the_whole_call(tool: PostgresTool, database_url: str) -> None:
    await run_sql(tool, database_url, "CREATE TABLE kept (n int)")
    error = await sql_error(
        tool,
        database_url,
        "INSERT INTO kept VALUES (1); CREATE TABLE half_made (n int); SELECT 1 / 0",
    )
    assert "division by zero" in str(error)
    assert error.details["sqlstate"] == "22012"
    left = await run_sql(
        tool,
        database_url,
        "SELECT (SELECT count(*) FROM kept) AS kept, to_regclass('half_made') IS NULL AS gone",
    )
    assert left["rows"] == [{"kept": 0, "gone": True}]


@pytest.mark.timeout(60)
async def test_a_statement_timeout_cancels_the_query(tool: PostgresTool, database_url: str) -> None:
    started = asyncio.get_running_loop().time()
    error = await sql_error(tool, database_url, "SELECT pg_sleep(10)", timeout_seconds=0.5)
    assert asyncio.get_running_loop().time() - started < 5
    assert "statement timeout" in str(error)
    assert error.details["sqlstate"] == "57014"
    shown = await run_sql(tool, database_url, "SHOW statement_timeout")
    assert shown["rows"] == [{"statement_timeout": "5min"}]


@pytest.mark.timeout(60)
async def test_values_are_made_json_native(tool: PostgresTool, database_url: str) -> None:
    result = await run_sql(
        tool,
        database_url,
        "SELECT 1.50::numeric AS exact, 1::numeric / 3 AS long, 12::numeric AS whole, "
        "'2024-02-29 12:00+00'::timestamptz AS at, '2024-02-29'::date AS day, "
        "'00000000-0000-0000-0000-000000000001'::uuid AS id, '\\xdeadbeef'::bytea AS raw, "
        """'{"a": [1, 2]}'::jsonb AS doc, 1, 2""",
    )
    row = result["rows"][0]
    assert row["exact"] == 1.5
    assert row["long"] == "0.33333333333333333333"
    assert row["whole"] == 12
    assert row["at"] == "2024-02-29T12:00:00+00:00"
    assert row["day"] == "2024-02-29"
    assert row["id"] == "00000000-0000-0000-0000-000000000001"
    assert row["raw"] == "3q2+7w=="
    assert row["doc"] == {"a": [1, 2]}
    assert result["columns"][-2:] == ["?column?", "?column?_2"]
    assert (row["?column?"], row["?column?_2"]) == (1, 2)


@pytest.mark.timeout(60)
async def test_the_pool_is_reused_across_calls_for_the_same_target(
    database_url: str,
) -> None:
    tool = PostgresTool()
    try:
        fields = url_fields(database_url)
        await tool.run(ToolCall("postgres", {"query": "SELECT 1"}, {}, 1, "a", auth=fields))
        (pool,) = tool.pools
        await tool.run(ToolCall("postgres", {"query": "SELECT 2"}, {}, 1, "b", auth=fields))
        same_target_as_url = {"dsn": database_url}
        await tool.run(
            ToolCall("postgres", {"query": "SELECT 3"}, {}, 1, "c", auth=same_target_as_url)
        )
        assert tool.pools == (pool,)
        await tool.run(
            ToolCall(
                "postgres", {"query": "SELECT 4"}, {}, 1, "d", auth={**fields, "sslmode": "disable"}
            )
        )
        assert len(tool.pools) == 2
    finally:
        await tool.close()
    assert pool.closed


@pytest.mark.timeout(60)
async def test_connection_fields_via_auth_support_a_unix_socket_host(
    tool: PostgresTool, database_url: str
) -> None:
    fields = url_fields(database_url)
    auth = {**fields, "username": fields.pop("user", None), "dbname": fields.pop("database")}
    result = await tool.run(
        ToolCall("postgres", {"query": "SELECT current_database() AS db"}, {}, 1, "s", auth=auth)
    )
    assert result["rows"] == [{"db": urlparse(database_url).path.lstrip("/")}]


@pytest.mark.timeout(60)
async def test_connection_via_a_dsn_in_auth_or_fields_in_the_tool_config(
    tool: PostgresTool, database_url: str
) -> None:
    expected = [{"db": urlparse(database_url).path.lstrip("/")}]
    query = {"query": "SELECT current_database() AS db"}
    by_dsn = await tool.run(ToolCall("postgres", query, {}, 1, "s", auth={"url": database_url}))
    assert by_dsn["rows"] == expected
    by_fields = await tool.run(
        ToolCall("postgres", {**query, **url_fields(database_url)}, {}, 1, "s")
    )
    assert by_fields["rows"] == expected


@pytest.mark.timeout(60)
async def test_no_connection_settings_is_an_error(tool: PostgresTool) -> None:
    with pytest.raises(ToolError) as caught:
        await tool.run(ToolCall("postgres", {"query": "SELECT 1"}, {}, 1, "s"))
    assert str(caught.value) == (
        "postgres tool needs `auth` (a credential name) or connection fields"
    )


@pytest.mark.timeout(60)
async def test_a_failed_connection_is_retryable_and_never_shows_the_password(
    tool: PostgresTool,
) -> None:
    auth = {
        "host": "127.0.0.1",
        "port": 1,
        "user": "u",
        "password": "hunter2-secret",
        "database": "d",
    }
    with pytest.raises(ToolError) as caught:
        await tool.run(ToolCall("postgres", {"query": "SELECT 1"}, {}, 1, "s", auth=auth))
    assert caught.value.retryable
    assert "hunter2-secret" not in str(caught.value)
    assert "hunter2-secret" not in repr(caught.value.details)
    with pytest.raises(ToolError) as bad_dsn:
        await tool.run(
            ToolCall(
                "postgres",
                {"query": "SELECT 1"},
                {},
                1,
                "s",
                auth={"dsn": "password=hunter2-secret nonsense=1"},
            )
        )
    assert "hunter2-secret" not in str(bad_dsn.value)


@pytest.mark.timeout(60)
async def test_get_tool_keeps_one_postgres_tool_and_close_tools_closes_its_pools(
    database_url: str,
) -> None:
    shared = get_tool("postgres")
    assert get_tool("postgres") is shared
    assert isinstance(shared, PostgresTool)
    await shared.run(
        ToolCall("postgres", {"query": "SELECT 1"}, {}, 1, "s", auth={"dsn": database_url})
    )
    (pool,) = shared.pools
    await close_tools()
    assert pool.closed
    assert get_tool("postgres") is not shared


@pytest.mark.timeout(60)
async def test_each_statement_is_also_command_i_and_commands_and_script_files_run(
    tool: PostgresTool, database_url: str, tmp_path: Any
) -> None:
    result = await run_sql(
        tool,
        database_url,
        "CREATE TABLE cmd (n int); INSERT INTO cmd VALUES (1), (2); SELECT n FROM cmd ORDER BY n",
    )
    assert result["command_0"] == {"status": "success", "row_count": 0, "affected_rows": 0}
    assert result["command_1"]["affected_rows"] == 2
    assert result["command_2"]["rows"] == [{"n": 1}, {"n": 2}] == result["rows"]
    listed = await tool.run(
        ToolCall(
            "postgres",
            {"commands": ["INSERT INTO cmd VALUES (3);", "SELECT count(*) AS c FROM cmd"]},
            {},
            1,
            "step",
            auth={"dsn": database_url},
        )
    )
    assert listed["command_1"]["rows"] == [{"c": 3}]
    script = tmp_path / "count.sql"
    script.write_text("SELECT max(n) AS top FROM cmd;")
    loaded = await tool.run(
        ToolCall(
            "postgres",
            {"script": {"uri": str(script), "source": {"type": "file"}}},
            {},
            1,
            "step",
            auth={"dsn": database_url},
        )
    )
    assert loaded["command_0"]["rows"] == [{"top": 3}]
    for kind, scheme in (("s3", "s3://"), ("gcs", "gs://")):
        with pytest.raises(ToolError, match=f"script source {kind} \\({scheme}b/x.sql\\)"):
            await tool.run(
                ToolCall(
                    "postgres",
                    {"script": {"uri": "x.sql", "source": {"type": kind, "bucket": "b"}}},
                    {},
                    1,
                    "step",
                    auth={"dsn": database_url},
                )
            )
