"""The duckdb tool on real in-memory and file databases."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

import pytest

from noetl.tools import ToolCall, ToolError
from noetl.tools.duckdb import DuckDBTool


def final(result: dict[str, Any]) -> dict[str, Any]:
    """The result without upstream's per-statement `command_<i>` entries."""
    return {k: v for k, v in result.items() if not k.startswith("command_")}


async def run_duckdb(**config: Any) -> Any:
    return await DuckDBTool().run(ToolCall("duckdb", config, {}, 1, "step"))


async def duckdb_error(**config: Any) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await run_duckdb(**config)
    return caught.value


@pytest.mark.timeout(60)
async def test_create_insert_and_select_in_one_call_return_the_rows_of_the_select() -> None:
    result = await run_duckdb(
        query="""
            CREATE TABLE items (id INTEGER, name VARCHAR);
            INSERT INTO items VALUES (1, 'semi;colon'), (2, 'plain');
            SELECT id, name FROM items ORDER BY id;
        """
    )
    assert final(result) == {
        "columns": ["id", "name"],
        "rows": [{"id": 1, "name": "semi;colon"}, {"id": 2, "name": "plain"}],
        "row_count": 2,
    }


@pytest.mark.timeout(60)
async def test_writes_only_report_the_affected_rows() -> None:
    result = await run_duckdb(
        command="CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1), (2), (3); "
        "DELETE FROM t WHERE n > 1"
    )
    assert final(result) == {"affected_rows": 5}


@pytest.mark.timeout(60)
async def test_the_rows_are_those_of_the_last_statement_that_returned_rows() -> None:
    result = await run_duckdb(
        query="CREATE TABLE t AS SELECT 7 AS n; SELECT n FROM t; DROP TABLE t"
    )
    assert result["rows"] == [{"n": 7}]


@pytest.mark.timeout(60)
async def test_positional_and_named_params_are_bound() -> None:
    positional = await run_duckdb(query="SELECT ? + 1 AS a, ? AS b", params=[41, "x'y"])
    assert positional["rows"] == [{"a": 42, "b": "x'y"}]
    named = await run_duckdb(
        query="CREATE TABLE t (n INTEGER); INSERT INTO t VALUES ($n); SELECT n, $label AS l FROM t",
        params={"n": 5, "label": "five"},
    )
    assert named["rows"] == [{"n": 5, "l": "five"}]


@pytest.mark.timeout(60)
async def test_values_are_made_json_native() -> None:
    result = await run_duckdb(
        query="SELECT 1.50::DECIMAL(5, 2) AS d, DATE '2024-02-29' AS day, "
        "'\\xAA\\xBB'::BLOB AS b, [1, 2] AS l, {'k': 'v'} AS s, 10::DECIMAL(5,0) AS i"
    )
    row = result["rows"][0]
    assert row == {
        "d": 1.5,
        "day": "2024-02-29",
        "b": "qrs=",
        "l": [1, 2],
        "s": {"k": "v"},
        "i": 10,
    }
    assert datetime.date.fromisoformat(row["day"]) == datetime.date(2024, 2, 29)


@pytest.mark.timeout(60)
async def test_a_syntax_error_is_a_tool_error_with_duckdbs_message() -> None:
    error = await duckdb_error(query="SELECT * FORM nowhere")
    assert "syntax error" in str(error)
    assert error.details["error_type"] == "ParserException"
    assert not error.retryable


@pytest.mark.timeout(60)
async def test_an_error_in_a_later_statement_is_an_error_not_a_partial_result() -> None:
    error = await duckdb_error(query="SELECT 1; SELECT * FROM missing_table")
    assert "missing_table" in str(error)


@pytest.mark.timeout(60)
async def test_a_db_path_file_persists_across_calls(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "data.duckdb"
    await run_duckdb(
        db_path=str(path), query="CREATE TABLE kept (n INTEGER); INSERT INTO kept VALUES (1)"
    )
    result = await run_duckdb(database=str(path), query="SELECT n FROM kept")
    assert result["rows"] == [{"n": 1}]


@pytest.mark.timeout(60)
async def test_a_failed_call_on_a_file_leaves_no_partial_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "data.duckdb")
    await run_duckdb(db_path=path, query="CREATE TABLE kept (n INTEGER)")
    await duckdb_error(db_path=path, query="INSERT INTO kept VALUES (1); SELECT * FROM missing")
    assert (await run_duckdb(db_path=path, query="SELECT count(*) AS c FROM kept"))["rows"] == [
        {"c": 0}
    ]


@pytest.mark.timeout(60)
async def test_the_default_database_is_a_fresh_memory_database_per_call() -> None:
    await run_duckdb(query="CREATE TABLE only_here (n INTEGER)")
    error = await duckdb_error(db_path=":memory:", query="SELECT * FROM only_here")
    assert "only_here" in str(error)


@pytest.mark.timeout(60)
async def test_a_slow_query_is_interrupted_at_the_timeout_and_the_loop_stays_free() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        error = await duckdb_error(
            query="SELECT count(*) FROM range(1000000000000) a", timeout_seconds=0.5
        )
    finally:
        ticker.cancel()
    assert str(error) == "duckdb query timed out after 0.5 s"
    assert error.retryable
    assert ticks > 10
