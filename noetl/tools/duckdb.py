"""The ``duckdb`` tool: run SQL on an embedded DuckDB database, on a thread.

Config: ``query`` (alias ``command``), ``params`` (a list for ``?``/``$1``, a mapping for
``$name``), ``db_path`` (alias ``database``; unset or ``:memory:`` is a fresh in-memory
database per call), ``timeout_seconds`` (default 300; the query is interrupted).

The text is split with DuckDB's own parser and the statements run in order in one
transaction (rolled back on error) unless the text manages transactions itself. ``params``
go to the statements that have placeholders; a mapping gives each statement the names it
uses. Result: see ``noetl.tools.sql``; the rows are those of the last statement that
returned rows, else ``affected_rows`` sums the counts of the writes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from noetl.tools.base import ToolCall, ToolError
from noetl.tools.sql import (
    Params,
    affected_result,
    rows_result,
    sql_params,
    sql_source,
    statement_count,
    statement_rows,
    with_statements,
)

if TYPE_CHECKING:
    import duckdb as duckdb_module

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0
MEMORY = ":memory:"
_ROW_STATEMENTS = {"SELECT", "EXPLAIN", "PRAGMA", "CALL", "ANALYZE", "RELATION"}
_STATUS_COLUMNS = (["Count"], ["Success"])
_INTERRUPT_GRACE = 5.0


class DuckDBTool:
    """Runs SQL on DuckDB; see the module docstring."""

    kind = "duckdb"
    default_timeout = DEFAULT_TIMEOUT

    async def run(self, call: ToolCall) -> Any:
        query = await sql_source(call.config, self.kind)
        params = sql_params(call.config)
        timeout = call.time_limit(DEFAULT_TIMEOUT)
        path = _db_path(call.config)
        import duckdb

        job = _Job(path, query, params)
        task = asyncio.ensure_future(asyncio.to_thread(job.run))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            job.interrupt()
            raise
        if not done:
            job.interrupt()
            await asyncio.wait({task}, timeout=_INTERRUPT_GRACE)
            if not task.done():
                task.add_done_callback(_discard_outcome)
            elif not task.cancelled():
                task.exception()  # retrieved: the interrupt's error is not the story
            raise ToolError(f"duckdb query timed out after {timeout:g} s", retryable=True)
        try:
            return task.result()
        except (duckdb.Error, OSError) as exc:
            message = str(exc).strip() or type(exc).__name__
            raise ToolError(message, details={"error_type": type(exc).__name__}) from None


class _Job:
    """One call's work on its worker thread, interruptible from the event loop."""

    def __init__(self, path: str, query: str, params: Params | None) -> None:
        self.path = path
        self.query = query
        self.params = params
        self._lock = threading.Lock()
        self._conn: duckdb_module.DuckDBPyConnection | None = None
        self._interrupted = False

    def interrupt(self) -> None:
        with self._lock:
            self._interrupted = True
            if self._conn is not None:
                self._conn.interrupt()

    def run(self) -> dict[str, Any]:
        import duckdb

        if self.path != MEMORY:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with duckdb.connect(self.path) as conn:
            with self._lock:
                self._conn = conn
                if self._interrupted:
                    raise duckdb.InterruptException("INTERRUPT Error: interrupted")
            try:
                return self._execute(conn)
            finally:
                with self._lock:
                    self._conn = None

    def _execute(self, conn: duckdb_module.DuckDBPyConnection) -> dict[str, Any]:
        statements = conn.extract_statements(self.query)
        with_params = [bool(statement.named_parameters) for statement in statements]
        if self.params is not None and not any(with_params):
            raise ToolError("params were given but the query has no placeholders")
        own_transaction = not any(s.type.name == "TRANSACTION" for s in statements)
        if own_transaction:
            conn.execute("BEGIN TRANSACTION")
        try:
            result = self._statements(conn, statements, with_params)
        except BaseException:
            if own_transaction:
                _rollback(conn)
            raise
        if own_transaction:
            conn.execute("COMMIT")
        return result

    def _statements(
        self,
        conn: duckdb_module.DuckDBPyConnection,
        statements: Sequence[Any],
        with_params: Sequence[bool],
    ) -> dict[str, Any]:
        last_rows: dict[str, Any] | None = None
        affected = 0
        results: list[dict[str, Any]] = []
        for statement, has_params in zip(statements, with_params, strict=True):
            cursor = conn.execute(statement, self._params_for(statement) if has_params else None)
            description = cursor.description
            if description is None:
                results.append(statement_count(0))
                continue
            columns = [str(column[0]) for column in description]
            rows = cursor.fetchall()
            if statement.type.name in _ROW_STATEMENTS or columns not in _STATUS_COLUMNS:
                last_rows = rows_result(columns, rows)
                results.append(statement_rows(columns, rows))
            elif columns == ["Count"] and rows and isinstance(rows[0][0], int):
                affected += rows[0][0]
                results.append(statement_count(rows[0][0]))
            else:
                results.append(statement_count(0))
        final = last_rows if last_rows is not None else affected_result(affected)
        return with_statements(final, results)

    def _params_for(self, statement: Any) -> Params | None:
        if isinstance(self.params, dict):
            names = set(statement.named_parameters)
            return {name: value for name, value in self.params.items() if name in names}
        return self.params


def _rollback(conn: duckdb_module.DuckDBPyConnection) -> None:
    try:
        conn.execute("ROLLBACK")
    except Exception as exc:  # the failure that got us here is the one to report
        logger.debug("duckdb rollback failed: %s", exc)


def _db_path(config: Mapping[str, Any]) -> str:
    raw = config.get("db_path", config.get("database"))
    if raw is None or raw in ("", MEMORY):
        return MEMORY
    if not isinstance(raw, str | Path):
        raise ToolError(f"db_path must be a file path, got {type(raw).__name__}")
    return str(raw)


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
