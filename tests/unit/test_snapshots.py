"""A step result larger than INLINE_RESULT_BYTES is written once, in its step.exit event; the
snapshots that follow name that event instead of carrying the result again."""

from __future__ import annotations

from typing import Any

from noetl.engine import Decision, ExecutionState
from noetl.protocol.events import EventType, StepStatus
from noetl.protocol.records import EventRecord
from noetl.server.snapshots import INLINE_RESULT_BYTES, LOGGED, LOGGED_WORKLOAD, Snapshots, large

BIG = {"blob": "x" * (INLINE_RESULT_BYTES + 1)}


def _exit(
    step: str, result: Any, event_id: int, status: str = StepStatus.COMPLETED.value
) -> EventRecord:
    return EventRecord(1, event_id, EventType.STEP_EXIT, step=step, status=status, result=result)


def _decision(results: dict[str, Any], *events: EventRecord, status: str = "RUNNING") -> Decision:
    return Decision(ExecutionState(1, status=status, results=results), tuple(events))


def test_large_is_the_size_as_json() -> None:
    assert not large(None) and not large(12345) and not large("x" * 100)
    assert not large({"a": "x" * (INLINE_RESULT_BYTES - 20)})
    assert large(BIG) and large(["x" * INLINE_RESULT_BYTES])
    assert large("\x00" * INLINE_RESULT_BYTES)  # 6 bytes a character once escaped


def test_a_large_result_is_named_by_its_event_and_small_ones_stay() -> None:
    snapshots = Snapshots()
    first = snapshots.snapshot(_decision({"a": 1, "big": BIG}, _exit("big", BIG, 10)))
    assert first["results"] == {"a": 1, "big": None}  # in order, the large one left out
    assert first[LOGGED] == {"big": 10}
    # later decisions hold the same value: still left out, with no event of their own
    later = snapshots.snapshot(_decision({"a": 1, "big": BIG, "c": 3}))
    assert later["results"] == {"a": 1, "big": None, "c": 3} and later[LOGGED] == {"big": 10}


def test_a_small_result_is_written_inline() -> None:
    snapshots = Snapshots()
    data = snapshots.snapshot(_decision({"a": {"k": "v"}}, _exit("a", {"k": "v"}, 10)))
    assert data["results"] == {"a": {"k": "v"}} and LOGGED not in data


def test_a_step_that_completes_again_is_named_by_its_new_result_or_written_inline() -> None:
    snapshots = Snapshots()
    snapshots.snapshot(_decision({"big": BIG}, _exit("big", BIG, 10)))
    again = {"blob": "y" * (INLINE_RESULT_BYTES + 1)}
    data = snapshots.snapshot(_decision({"big": again}, _exit("big", again, 20)))
    assert data[LOGGED] == {"big": 20}
    small = snapshots.snapshot(_decision({"big": 7}, _exit("big", 7, 30)))
    assert small["results"] == {"big": 7} and LOGGED not in small


def test_only_the_very_value_the_event_holds_is_left_out() -> None:
    """A decision rolled back after its snapshot was made leaves what it remembered; a state
    that does not hold that value (an equal copy, read from the row) writes it inline."""
    snapshots = Snapshots()
    snapshots.snapshot(_decision({}, _exit("big", BIG, 10)))  # rolled back: not in the state
    data = snapshots.snapshot(_decision({"big": dict(BIG)}))
    assert data["results"] == {"big": BIG} and LOGGED not in data


def test_a_failed_exit_names_nothing() -> None:
    snapshots = Snapshots()
    data = snapshots.snapshot(
        _decision({"big": BIG}, _exit("big", BIG, 10, status=StepStatus.FAILED.value))
    )
    assert data["results"] == {"big": BIG} and LOGGED not in data


def test_an_ended_execution_is_forgotten_and_the_oldest_beyond_the_bound() -> None:
    snapshots = Snapshots(size=2)
    ended = snapshots.snapshot(_decision({"big": BIG}, _exit("big", BIG, 10), status="COMPLETED"))
    assert ended[LOGGED] == {"big": 10}  # its last snapshot still leaves it out
    assert snapshots.snapshot(_decision({"big": BIG}))["results"] == {"big": BIG}

    def decision(execution_id: int, *events: EventRecord) -> Decision:
        return Decision(ExecutionState(execution_id, results={"big": BIG}), events)

    for execution_id in (2, 3, 4):
        exit_ = EventRecord(
            execution_id,
            10 + execution_id,
            EventType.STEP_EXIT,
            step="big",
            status=StepStatus.COMPLETED.value,
            result=BIG,
        )
        snapshots.snapshot(decision(execution_id, exit_))
    assert snapshots.snapshot(decision(2))["results"] == {"big": BIG}  # the oldest: forgotten
    assert snapshots.snapshot(decision(4))[LOGGED] == {"big": 14}


def _initialized(workload: dict[str, Any], event_id: int = 5) -> EventRecord:
    return EventRecord(
        1, event_id, EventType.PLAYBOOK_INITIALIZED, payload={"workload": workload, "path": "p"}
    )


def test_a_large_workload_is_named_by_the_initialized_event_with_its_rendered_keys() -> None:
    given = {"ids": list(range(2000)), "tag": "{{ 1 }}"}
    workload = {**given, "tag": "1"}  # as the engine rendered it
    snapshots = Snapshots()
    state = ExecutionState(1, workload=workload)
    data = snapshots.snapshot(Decision(state), [_initialized(given)])
    assert data["workload"] == {"tag": "1"} and data[LOGGED_WORKLOAD] == 5
    later = snapshots.snapshot(Decision(ExecutionState(1, workload=workload)))
    assert later["workload"] == {"tag": "1"} and later[LOGGED_WORKLOAD] == 5


def test_a_small_workload_or_one_rendering_dropped_keys_from_is_written_inline() -> None:
    snapshots = Snapshots()
    small = {"n": 1}
    data = snapshots.snapshot(Decision(ExecutionState(1, workload=small)), [_initialized(small)])
    assert data["workload"] == small and LOGGED_WORKLOAD not in data
    given = {"ids": list(range(2000)), "gone": 1}
    fewer = {"ids": given["ids"]}
    data = snapshots.snapshot(Decision(ExecutionState(1, workload=fewer)), [_initialized(given)])
    assert data["workload"] == fewer and LOGGED_WORKLOAD not in data


def test_a_workload_value_rendered_to_an_equal_value_of_another_json_type_stays_inline() -> None:
    given = {"ids": list(range(2000)), "flag": 1}
    workload = {**given, "flag": True}  # equal in Python, not as JSON
    snapshots = Snapshots()
    data = snapshots.snapshot(Decision(ExecutionState(1, workload=workload)), [_initialized(given)])
    assert data["workload"] == {"flag": True} and data[LOGGED_WORKLOAD] == 5
    assert data["workload"]["flag"] is True
