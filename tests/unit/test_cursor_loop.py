"""Cursor loops (`loop.cursor`, `spec.mode: cursor`) in the pure engine: claim a frame of rows
with a postgres query, run the step once per row (or once per frame), claim again until a claim
returns no rows; then the step completes and its arcs see `loop.done`."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noetl.engine import CommandCompleted, CommandFailed, ExecutionState
from noetl.protocol.records import CommandRecord
from tests.unit.engine_harness import Harness

CURSOR = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: t}
workload: {auth_name: pg_local}
workflow:
  - step: drain
    loop:
      cursor:
        kind: postgres
        auth: "{{ auth_name }}"
        claim: "UPDATE q SET s = 'claimed' ... LIMIT {{ __frame_max_rows | default(1) | int }}"
      iterator: job
      spec:
        mode: cursor
        max_in_flight: 1
        frame:
          {max_rows: MAX_ROWS, row_concurrency: CONCURRENCY, process: PROCESS, lease_seconds: 9}
    tool: {kind: noop, result: "{{ iter.job }}"}
    next:
      arcs:
        - {step: end, when: "{{ event.name == 'loop.done' }}"}
  - step: end
    tool: {kind: noop, result: "{{ drain.count }}/{{ drain.frames | default('-') }}"}
"""


def playbook(max_rows: int = 2, concurrency: int = 1, process: str = "row") -> str:
    return (
        CURSOR.replace("MAX_ROWS", str(max_rows))
        .replace("CONCURRENCY", str(concurrency))
        .replace("PROCESS", process)
    )


class Queue:
    """A work queue as a claim query sees it: pending ids, claimed `LIMIT n` at a time."""

    def __init__(self, size: int, more: int = 0) -> None:
        self.pending = list(range(size))
        self.more = more  # each processed row below this id enqueues one continuation row
        self.next_id = size
        self.done: list[Any] = []
        self.claims: list[str] = []

    def claim(self, command: CommandRecord) -> dict[str, Any]:
        assert command.tool["kind"] == "postgres" and command.tool["auth"] == "pg_local"
        self.claims.append(command.tool["query"])
        limit = int(re.findall(r"LIMIT (\d+)", command.tool["query"])[-1])
        taken, self.pending = self.pending[:limit], self.pending[limit:]
        return {"columns": ["id"], "rows": [{"id": i} for i in taken], "row_count": len(taken)}

    def process(self, item: Any) -> Any:
        for row in item if isinstance(item, list) else [item]:
            self.done.append(row["id"])
            if row["id"] < self.more:
                self.pending.append(self.next_id)
                self.next_id += 1
        return item


def drive(h: Harness, queue: Queue, cap: int | None = None) -> ExecutionState:
    """Answer commands in order; check the in-flight bound and the state's round trip."""
    h.start()
    while h.pending:
        if cap is not None:
            rows_in_flight = [c for c in h.pending if c.iteration is not None]
            assert len(rows_in_flight) <= cap
        command = h.pending.pop(0)
        result: Any
        if command.step == "drain" and command.iteration is None:
            result = queue.claim(command)
        elif command.step == "drain":
            result = queue.process(command.tool["result"])
        else:
            result = command.tool.get("result")
        h.apply(CommandCompleted(command.command_id, result))
        assert ExecutionState.from_json(h.state.to_json()) == h.state
    return h.state


def test_a_cursor_loop_claims_frames_until_the_claim_returns_no_rows() -> None:
    queue = Queue(5)
    h = Harness(playbook(max_rows=2))
    state = drive(h, queue)
    assert state.status == "COMPLETED", state.error
    assert sorted(queue.done) == [0, 1, 2, 3, 4]
    assert len(queue.claims) == 4  # 2 + 2 + 1 rows, then none
    assert all(claim.endswith("LIMIT 2") for claim in queue.claims)  # __frame_max_rows
    assert state.results["drain"] == {
        "count": 5,
        "succeeded": 5,
        "failed": 0,
        "stats": {"total": 5, "success": 5, "failed": 0},
    }
    assert state.steps["drain"].loop is not None and state.steps["drain"].loop.rows == []
    assert state.result == "5/-"
    exit_ = next(e for e in h.events if e.step == "drain" and e.event_type == "step.exit")
    assert exit_.payload["next"] == ["end"]  # `loop.done`
    assert exit_.result == {
        "count": 5,
        "succeeded": 5,
        "failed": 0,
        "stats": {"total": 5, "success": 5, "failed": 0},
    }


def test_an_empty_queue_completes_the_step_after_one_claim() -> None:
    queue = Queue(0)
    state = drive(Harness(playbook()), queue)
    assert state.status == "COMPLETED" and len(queue.claims) == 1 and state.result == "0/-"


def test_rows_a_frame_enqueues_are_claimed_by_a_later_frame() -> None:
    """Page continuation: processing a row may add work; the loop drains it too."""
    queue = Queue(3, more=3)
    state = drive(Harness(playbook(max_rows=50)), queue)
    assert state.status == "COMPLETED"
    assert sorted(queue.done) == [0, 1, 2, 3, 4, 5]


def test_iterations_see_the_row_as_iter_and_are_bounded_by_row_concurrency() -> None:
    queue = Queue(7)
    h = Harness(playbook(max_rows=4, concurrency=3))
    state = drive(h, queue, cap=3)
    assert state.status == "COMPLETED"
    issued = [e for e in h.events if e.event_type == "command.issued" and e.step == "drain"]
    rows = [e.payload["tool"]["result"] for e in issued if e.payload["iteration"] is not None]
    assert rows == [{"id": i} for i in range(7)]
    assert [e.payload["iteration"] for e in issued if "frame" not in e.payload] == list(range(7))


def test_process_frame_runs_the_step_once_per_frame_with_its_rows() -> None:
    queue = Queue(5)
    h = Harness(playbook(max_rows=2, process="frame"))
    state = drive(h, queue)
    assert state.status == "COMPLETED" and sorted(queue.done) == [0, 1, 2, 3, 4]
    assert state.results["drain"]["count"] == 3  # frames of 2, 2 and 1 rows


def test_a_failed_row_fails_the_step_and_a_failed_claim_names_the_claim() -> None:
    h = Harness(playbook())
    queue = Queue(3)

    def answer(command: CommandRecord) -> tuple[bool, Any]:
        if command.iteration is None:
            return True, queue.claim(command)
        return command.iteration != 1, "row failed"

    state = h.run(answer)
    assert state.status == "FAILED" and "iteration 1: row failed" in (state.error or "")
    h = Harness(playbook())
    state = h.run(lambda command: (False, "relation q does not exist"))
    assert state.status == "FAILED"
    assert "cursor claim (frame 0): relation q does not exist" in (state.error or "")


def test_a_claim_result_without_rows_and_bad_frame_fields_fail_the_step() -> None:
    state = Harness(playbook()).run(lambda command: (True, "text"))
    assert state.status == "FAILED" and "no rows field" in (state.error or "")
    state = Harness(playbook(max_rows=0)).run()
    assert state.status == "FAILED" and "max_rows must be a positive integer" in (state.error or "")
    state = Harness(playbook(concurrency=10**6)).run()  # a frame's rows all issued at once
    assert state.status == "FAILED"
    assert "row_concurrency: 1000000 is over the limit of 10000" in (state.error or "")


def test_a_claim_that_never_drains_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setattr(importlib.import_module("noetl.engine.decide"), "MAX_CURSOR_ITEMS", 6)
    h = Harness(playbook(max_rows=2))

    def answer(command: CommandRecord) -> tuple[bool, Any]:  # the claim marks nothing
        return True, {"rows": [{"id": 1}, {"id": 2}]} if command.iteration is None else None

    state = h.run(answer)
    assert state.status == "FAILED" and "6 rows claimed, the limit is 6" in (state.error or "")


def test_a_re_entered_cursor_step_starts_counting_again() -> None:
    text = (
        playbook()
        .replace(
            "        - {step: end, when: \"{{ event.name == 'loop.done' }}\"}",
            '        - {step: drain, when: "{{ ctx.rounds | default(0) < 1 }}",'
            " set: {ctx.rounds: 1}}\n"
            "        - {step: end}",
        )
        .replace("next:\n      arcs:", "next:\n      spec: {mode: exclusive}\n      arcs:", 1)
    )
    queue = Queue(3)
    h = Harness(text)
    state = drive(h, queue)
    assert state.status == "COMPLETED" and sorted(queue.done) == [0, 1, 2]
    assert state.steps["drain"].runs == 2 and state.result == "0/-"


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 12),
    more=st.integers(0, 6),
    max_rows=st.integers(1, 5),
    concurrency=st.integers(1, 4),
    process=st.sampled_from(["row", "frame"]),
)
def test_every_row_is_processed_exactly_once(
    size: int, more: int, max_rows: int, concurrency: int, process: str
) -> None:
    queue = Queue(size, more=min(more, size))
    h = Harness(playbook(max_rows, concurrency, process))
    state = drive(h, queue, cap=concurrency)
    assert state.status == "COMPLETED", state.error
    assert sorted(queue.done) == list(range(queue.next_id))
    assert not state.commands
    claims = [e for e in h.events if e.event_type == "command.issued" and "frame" in e.payload]
    assert [e.payload["frame"] for e in claims] == list(range(len(claims)))


def test_a_failed_claim_is_failed_routing_material_like_any_failure() -> None:
    """`call.error`-guarded arcs route a failed claim (the step failed, handled)."""
    text = playbook().replace(
        "        - {step: end, when: \"{{ event.name == 'loop.done' }}\"}",
        "        - {step: end, when: \"{{ event.name in ['loop.done', 'call.error'] }}\"}",
    )
    h = Harness(text)
    h.start()
    (claim,) = h.pending
    h.pending.clear()
    h.apply(CommandFailed(claim.command_id, "boom"))
    assert h.state.steps["drain"].status == "failed"
    assert h.state.steps["end"].runs == 1  # entered: the failure was routed to it
