"""Recorded histories: real event logs (tests/histories/*.json, recorded by
`python -m tests.histories.record`) folded through today's engine must end as they ended, and
the engine must emit the same events it emitted then. An engine change that would
reinterpret old runs fails here."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from noetl.dsl import parse_playbook
from noetl.engine import ExecutionState
from noetl.engine.replay import Replayer, incoming

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
FILES = sorted(HISTORIES.glob("*.json"))
ENGINE_EVENTS = {
    "step.enter",
    "step.exit",
    "step.skipped",
    "command.issued",
    "command.cancelled",
    "playbook.completed",
    "playbook.failed",
    "playbook.cancelled",
}


def _runs(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [record, *(run for child in record["children"] for run in _runs(child))]


def _shape(event: Any) -> tuple[Any, ...]:
    if isinstance(event, dict):
        return (event["event_type"], event["step"], event["command_id"], event["status"])
    return (event.event_type.value, event.step, event.command_id, event.status)


def test_the_histories_cover_a_loop_a_fan_in_a_retry_a_sub_playbook_and_a_failure() -> None:
    assert {f.stem for f in FILES} >= {"loop", "fan_in", "retry", "parent", "failure"}


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_a_recorded_history_folds_to_its_recorded_end(path: Path) -> None:
    record = json.loads(path.read_text())
    for run in _runs(record):
        execution = run["execution"]
        playbook = parse_playbook(record["playbooks"][execution["path"].rsplit("/", 1)[-1]])
        replayer = Replayer(
            playbook, ExecutionState(int(execution["execution_id"])), itertools.count(1).__next__
        )
        emitted: list[tuple[Any, ...]] = []
        for event in run["events"]:
            change = incoming(event)
            if change is not None:
                emitted += [_shape(e) for e in replayer.apply([change]).events]
        state = replayer.state
        recorded = [_shape(e) for e in run["events"] if e["event_type"] in ENGINE_EVENTS]
        assert emitted == recorded
        assert (state.status, state.result, state.error) == (
            execution["status"],
            execution["result"],
            execution["error"],
        )
