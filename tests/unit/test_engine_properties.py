"""Property tests: any order of completions, with duplicates, gives the same outcome."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from noetl.engine import CommandCompleted
from tests.unit.engine_harness import Harness

DIAMOND = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: diamond}
workload: {items: [1, 2, 3, 4]}
workflow:
  - step: start
    tool: {kind: noop}
    next: {spec: {mode: inclusive}, arcs: [{step: a}, {step: b}, {step: c, when: "{{ false }}"}]}
  - step: a
    loop: {in: "{{ items }}", iterator: x, spec: {mode: parallel, max_in_flight: 3}}
    tool: {kind: noop}
    next: [join]
  - {step: b, tool: {kind: noop}, next: [join]}
  - {step: c, tool: {kind: noop}, next: [join]}
  - {step: join, tool: {kind: noop}}
"""


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.data())
def test_completion_order_and_duplicates_do_not_change_the_outcome(data: st.DataObject) -> None:
    h = Harness(DIAMOND)
    h.start()
    answered: list[str] = []
    while h.pending:
        index = data.draw(st.integers(0, len(h.pending) - 1))
        command = h.pending.pop(index)
        value = command.iteration if command.iteration is not None else command.step
        h.apply(CommandCompleted(command.command_id, value))
        answered.append(command.command_id)
        if data.draw(st.booleans()):  # a duplicate of something already answered
            again = data.draw(st.sampled_from(answered))
            h.apply(CommandCompleted(again, "duplicate"))
    kinds = h.kinds()
    assert h.state.status == "COMPLETED"
    assert sum(k.startswith("playbook.") and k != "playbook.initialized" for k in kinds) == 1
    enters = [str(e.step) for e in h.events if e.event_type == "step.enter"]
    assert sorted(enters) == ["a", "b", "join", "start"]  # every step at most once; c skipped
    assert h.kinds("c") == ["step.skipped"]
    assert h.state.results["a"] == {
        "count": 4,
        "succeeded": 4,
        "failed": 0,
        "stats": {"total": 4, "success": 4, "failed": 0},
    }
    assert h.replayer.ledger.results[("a", 1)] == [0, 1, 2, 3]
    assert h.state.result == "join"
    completed = [e.command_id for e in h.events if e.event_type == "command.issued"]
    assert len(completed) == len(set(completed)) == 7
