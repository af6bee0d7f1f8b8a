"""A decision's writes as one statement (noetl.store.decisions): which rows each part writes.
The statement itself runs against PostgreSQL in every integration test; these pin the rules
its parts follow because they share one snapshot (no row touched twice)."""

from __future__ import annotations

from typing import Any

from noetl.protocol.events import EventType
from noetl.protocol.records import CommandRecord, EventRecord
from noetl.store import decisions


def _command(name: str, event_id: int) -> CommandRecord:
    return CommandRecord(1, event_id, f"1:{name}", name, {"kind": "noop"}, {})


def _event(event_id: int) -> EventRecord:
    return EventRecord(1, event_id, EventType.STEP_ENTER, step="a")


def _parts(sql: str) -> list[str]:
    return [part for part in ("noetl.event", "noetl.command", "noetl.execution") if part in sql]


def test_nothing_to_write_is_no_statement() -> None:
    assert decisions.statement(1) is None
    assert decisions.statement(1, settled={"COMPLETED": [], "FAILED": []}) is None


def test_one_statement_with_a_placeholder_per_parameter() -> None:
    state = decisions.State({"s": 1}, "RUNNING", None, None)
    found = decisions.statement(
        1,
        events=[_event(10), _event(11)],
        commands=[_command("a", 12)],
        settled={"COMPLETED": ["1:x"]},
        state=state,
    )
    assert found is not None
    sql, params = found
    assert sql.startswith("WITH ") and sql.count("INSERT INTO noetl.event") == 1
    # the rows as one JSON document each: the text and the parameter count do not grow
    assert sql.count("%s") == len(params) == 1 + 1 + 3 + 6
    assert [row["event_id"] for row in params[0].obj] == [10, 11]
    assert sql.rstrip().endswith("WHERE execution_id = %s")  # the state update comes last


def _command_rows(params: list[Any]) -> list[tuple[Any, ...]]:
    fields = ("status", "attempt", "worker_id", "lease")
    return [tuple(row[f] for f in fields) for row in params[0].obj]


def test_the_handed_command_is_inserted_claimed_and_a_cancelled_new_one_cancelled() -> None:
    claim = decisions.Claim("1:a", "w1", 30.0)
    found = decisions.statement(
        1, commands=[_command("a", 12), _command("b", 13)], cancelled=["1:b"], claims=[claim]
    )
    assert found is not None
    sql, params = found
    assert "UPDATE noetl.command" not in sql  # the cancelled one is new: no second write
    (a, b) = _command_rows(params)
    assert a == ("CLAIMED", 1, "w1", 30.0)
    assert b == ("CANCELLED", 0, None, None)


def test_a_command_with_an_outcome_keeps_it_when_the_decision_cancels_the_rest() -> None:
    found = decisions.statement(
        1, cancelled=["1:x", "1:y", "1:y"], settled={"COMPLETED": ["1:x"], "FAILED": []}
    )
    assert found is not None
    sql, params = found
    assert sql.count("UPDATE noetl.command") == 2
    assert params == ["CANCELLED", ["1:y"], 1, "COMPLETED", ["1:x"], 1]


def test_the_statement_does_not_grow_with_the_rows() -> None:
    """psycopg caches a query's conversion only up to 50 parameters (and dumps lists in
    Python), and PostgreSQL prepares a statement per text: many rows must not make a new text
    or more parameters."""
    few = decisions.statement(1, events=[_event(1)], commands=[_command("a", 2)])
    many = decisions.statement(
        1,
        events=[_event(i) for i in range(5000)],
        commands=[_command(f"c{i}", 10_000 + i) for i in range(1000)],
    )
    assert few is not None and many is not None
    assert few[0] == many[0] and len(few[1]) == len(many[1]) == 2
    assert _parts(many[0]) == ["noetl.event", "noetl.command"]
