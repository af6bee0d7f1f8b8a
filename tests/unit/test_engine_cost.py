"""What keeps a decision's cost to what it touches (issue 12) keeps the engine's semantics:
step states copied on write never leak a change into the state a decision was given, the
counted step runs equal the steps' runs, templates see only (and all) the names they read,
and the per-playbook caches give what working it out each time gave."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from noetl.dsl import parse_playbook
from noetl.dsl.template import render
from noetl.engine import CommandCompleted, ExecutionState, Started, decide_all
from noetl.engine.loops import LoopLedger
from noetl.engine.steps import names_in, runs_on_worker, template_names
from noetl.protocol.records import CommandRecord

HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: cost}\n"

# fan-out with a dead path and a fan-in, a parallel and a sequential loop, a back edge that
# re-runs a step (pagination), an admission rule, `set` on arcs
PLAYBOOK = (
    HEAD
    + """
workload: {items: [1, 2, 3], pages: 3}
workflow:
  - step: start
    tool: {kind: noop, result: {n: 1}}
    set: {ctx.page: 0}
    next:
      spec: {mode: inclusive}
      arcs: [{step: a}, {step: b}, {step: c, when: "{{ false }}"}]
  - step: a
    loop: {in: "{{ items }}", iterator: x, spec: {mode: parallel, max_in_flight: 2}}
    tool: {kind: noop, result: "{{ x }}"}
    next: [join]
  - step: b
    loop: {in: "{{ pages }}", iterator: i, spec: {mode: sequential}}
    tool: {kind: noop}
    next: [page]
  - step: page
    tool: {kind: noop, result: "{{ ctx.page }}"}
    next:
      spec: {mode: exclusive}
      arcs:
        - {step: page, when: "{{ ctx.page < 2 }}", set: {ctx.page: "{{ ctx.page + 1 }}"}}
        - {step: join}
  - {step: c, tool: {kind: noop}, next: [join]}
  - step: join
    spec: {policy: {admit: {rules: [{when: "{{ true }}", then: {allow: true}}]}}}
    tool: {kind: noop, result: "{{ a.results | length }}"}
"""
)


def _snapshot(state: ExecutionState) -> str:
    return json.dumps(state.to_json(), sort_keys=True)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.data())
def test_a_decision_never_changes_the_state_it_was_given(data: st.DataObject) -> None:
    """Every decision is made twice from the same state: the given state is unchanged
    (snapshot and step objects), both decisions agree, and the new state round-trips
    through JSON, with its counted step runs equal to the steps' runs."""
    playbook = parse_playbook(PLAYBOOK)
    ids = itertools.count(1)
    ledger = LoopLedger()
    state = ExecutionState(3)
    pending: list[CommandRecord] = []
    incoming: list[Any] = [Started({"items": [1, 2, 3], "pages": 3})]
    while incoming:
        before = _snapshot(state)
        steps_before = {name: copy.deepcopy(step) for name, step in state.steps.items()}
        first = decide_all(playbook, state, incoming, new_id=lambda: 0, data=ledger.data())
        assert _snapshot(state) == before
        assert state.steps == steps_before
        decision = decide_all(
            playbook, state, incoming, new_id=lambda: next(ids), data=ledger.data()
        )
        assert _snapshot(decision.state) == _snapshot(first.state)
        assert ExecutionState.from_json(decision.state.to_json()) == decision.state
        assert decision.state.step_runs() == sum(s.runs for s in decision.state.steps.values())
        for change in incoming:
            ref = state.commands.get(getattr(change, "command_id", ""))
            if ref is not None and ref.iteration is not None:
                ledger.record_result(ref.step, ref.run, ref.iteration, change.result)
        ledger.record_events(decision.events)
        pending.extend(decision.commands)
        state = ExecutionState.from_json(json.loads(json.dumps(decision.state.to_json())))
        if not pending:
            break
        batch = [pending.pop(data.draw(st.integers(0, len(pending) - 1)))]
        together: bool = data.draw(st.booleans())  # two reports in one transaction
        if pending and together:
            batch.append(pending.pop(0))
        incoming = [CommandCompleted(c.command_id, c.tool.get("result")) for c in batch]
    assert state.status == "COMPLETED", state.error
    assert state.result == 3 and state.steps["page"].runs == 3
    assert state.steps["c"].status == "skipped"


def test_the_step_run_limit_counts_runs_of_every_step_across_decisions() -> None:
    """The limit reads a counted total (not a walk over the steps): it must still stop a
    runaway loop at exactly the limit, across decisions and JSON snapshots."""
    playbook = parse_playbook(
        HEAD
        + """executor: {spec: {max_step_runs: 7}}
workflow:
  - {step: start, tool: {kind: noop}, next: [again]}
  - {step: again, tool: {kind: noop}, next: [start]}
"""
    )
    ids = itertools.count(1)
    decision = decide_all(playbook, ExecutionState(1), [Started({})], new_id=lambda: next(ids))
    entered = 1
    while decision.commands:
        state = ExecutionState.from_json(decision.state.to_json())
        [command] = decision.commands
        decision = decide_all(
            playbook, state, [CommandCompleted(command.command_id)], new_id=lambda: next(ids)
        )
        entered += sum(e.event_type == "step.enter" for e in decision.events)
    assert entered == 7
    assert decision.state.status == "FAILED"
    assert "7 step runs" in (decision.state.error or "")


class _Reads(Mapping[str, Any]):
    """A context that records which names are read from it."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.given = values
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self.given[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.given)

    def __len__(self) -> int:
        return len(self.given)


def test_a_render_reads_only_the_names_its_template_reads() -> None:
    """A render's cost must not grow with the context (every step's result is in it)."""
    values = {f"s{k}": {"i": k} for k in range(1000)} | {"x": 2}
    context = _Reads(values)
    assert render({"p": "{{ s7.i + x }}", "q": "a{{ s9.i }}"}, context) == {"p": 9, "q": "a9"}
    assert context.read == {"s7", "x", "s9"}
    # names a template sets itself, loop variables, and undefined names behave as before
    text = "{% set y = 3 %}{% for k in [1, 2] %}{{ k + y }}{% endfor %}{{ s1.i }}"
    assert render(text, _Reads(values)) == "451"
    assert render("{{ missing | default('d') }}", _Reads(values)) == "d"


def test_names_worked_out_once_per_step_equal_those_worked_out_per_decision() -> None:
    playbook = parse_playbook(PLAYBOOK)
    for step in playbook.steps.values():
        arcs = [[arc.when, arc.set] for arc in step.next.arcs] if step.next else []
        item_set = {} if runs_on_worker(step) else step.tool.set
        assert names_in(playbook, step.name, "arcs") == template_names(arcs)
        assert names_in(playbook, step.name, "completion") == template_names(
            [item_set, step.set, *arcs]
        )
        assert names_in(playbook, step.name, "admit") == template_names(list(step.admit))
        collection = step.loop.collection if step.loop else None
        assert names_in(playbook, step.name, "collection") == template_names(collection)
    assert names_in(playbook, "a", "collection") == {"items"}
    assert names_in(playbook, "page", "completion") == {"ctx"}
    assert names_in(playbook, "join", "admit") == frozenset()


def test_step_states_parse_only_what_is_read_and_give_back_the_rest_as_it_came() -> None:
    """A snapshot's step entries are parsed when read: `to_json` hands the others back as
    the very objects it was given, so neither direction costs per step of the execution."""
    from noetl.engine.state import StepState, StepStates

    raw = {
        "a": StepState("completed", 1, ["x"], [], None, "x").to_json(),
        "b": StepState("running", 2).to_json(),
        "c": StepState("waiting", 0, [], ["b"]).to_json(),
    }
    snapshot = {**ExecutionState(4).to_json(), "steps": raw}
    state = ExecutionState.from_json(snapshot)
    assert state.step_runs() == 3 and len(state.steps) == 3 and "b" in state.steps
    copied = state.copy_on_write()
    changed = copied.step_states.writable("b")
    changed.runs, changed.status = 3, "completed"
    copied.steps["b"] = changed
    copied.steps["d"] = StepState("running", 1)
    out = copied.to_json()["steps"]
    assert list(out) == ["a", "b", "c", "d"]
    assert out["a"] is raw["a"] and out["c"] is raw["c"]  # not read: not parsed, not rebuilt
    assert out["b"] == {**raw["b"], "runs": 3, "status": "completed"} and raw["b"]["runs"] == 2
    assert copied.step_runs() == 5 and state.step_runs() == 3
    assert state.to_json() == snapshot and state.steps["b"].runs == 2  # the original is as it was
    assert state.steps["a"] == StepState("completed", 1, ["x"], [], None, "x")
    assert dict(copied.steps) == {
        "a": state.steps["a"],
        "b": changed,
        "c": StepState("waiting", 0, [], ["b"]),
        "d": StepState("running", 1),
    }
    assert copied.to_json()["steps"]["a"] is raw["a"]  # read, never set: goes out as it came
    del copied.steps["a"], copied.steps["d"]
    assert list(copied.steps) == ["b", "c"] and copied.step_runs() == 3
    assert list(state.steps) == ["a", "b", "c"] and "d" not in state.steps
    assert ExecutionState.from_json(copied.to_json()) == copied
    assert StepStates({"z": StepState()}) == {"z": StepState()}


def test_a_decided_state_held_for_the_next_decision_is_not_rebuilt() -> None:
    """The server may hold a decision's state for the next one (no JSON in between): the
    states a decision set are folded into the snapshot's entries once it ends, so a later
    `to_json` hands them back as they are, and the next decisions still see and change them."""
    playbook = parse_playbook(PLAYBOOK)
    ids = itertools.count(1)
    ledger = LoopLedger()
    state = ExecutionState(3)
    pending: list[CommandRecord] = []
    incoming: list[Any] = [Started({"items": [1, 2, 3], "pages": 3})]
    by_json = ExecutionState(3)
    while incoming:
        decision = decide_all(
            playbook, state, incoming, new_id=lambda: next(ids), data=ledger.data()
        )
        first, second = decision.state.to_json()["steps"], decision.state.to_json()["steps"]
        assert all(first[name] is second[name] for name in first)
        assert decision.state.step_runs() == sum(s.runs for s in decision.state.steps.values())
        again = decide_all(
            playbook, by_json, incoming, new_id=lambda: next(ids), data=ledger.data()
        )
        assert json.dumps(again.state.to_json()["steps"]) == json.dumps(first)
        for change in incoming:
            ref = state.commands.get(getattr(change, "command_id", ""))
            if ref is not None and ref.iteration is not None:
                ledger.record_result(ref.step, ref.run, ref.iteration, change.result)
        ledger.record_events(decision.events)
        pending.extend(decision.commands)
        state = decision.state  # held: no JSON in between
        by_json = ExecutionState.from_json(json.loads(json.dumps(state.to_json())))
        if not pending:
            break
        command = pending.pop(0)
        incoming = [CommandCompleted(command.command_id, command.tool.get("result"))]
    assert state.status == "COMPLETED" and state.steps["page"].runs == 3


def test_a_step_entry_holds_only_what_is_set_and_entries_written_in_full_still_read() -> None:
    from noetl.engine.state import LoopState, StepState, _parsed

    assert StepState("completed", 1).to_json() == {"status": "completed", "runs": 1}
    full = StepState("running", 2, ["a"], ["b"], LoopState(count=3), "a")
    assert _parsed(full.to_json()) == full
    written_before = {  # every field, as snapshots stored before held them
        "status": "completed",
        "runs": 1,
        "arrived": ["s48"],
        "dead": [],
        "loop": None,
        "came_from": "s48",
    }
    assert _parsed(written_before) == StepState("completed", 1, ["s48"], [], None, "s48")


def test_a_fan_out_counts_the_step_runs_once_and_stops_at_the_limit_within_a_decision(
    monkeypatch: Any,
) -> None:
    """Counting the runs walked every step state the decision had changed, per step entered:
    a fan-out to 8,000 steps was quadratic. The count is now taken once per decision."""
    arcs = ", ".join(f"{{step: s{i}}}" for i in range(10))
    steps = "".join(f"  - {{step: s{i}, tool: {{kind: noop}}}}\n" for i in range(10))
    playbook = parse_playbook(
        HEAD
        + "executor: {spec: {max_step_runs: 6}}\nworkflow:\n"
        + "  - step: start\n    tool: {kind: noop}\n"
        + f"    next: {{spec: {{mode: inclusive}}, arcs: [{arcs}]}}\n"
        + steps
    )
    counted = 0
    real = ExecutionState.step_runs

    def counting(self: ExecutionState) -> int:
        nonlocal counted
        counted += 1
        return real(self)

    monkeypatch.setattr(ExecutionState, "step_runs", counting)
    ids = itertools.count(1)
    decision = decide_all(playbook, ExecutionState(1), [Started({})], new_id=lambda: next(ids))
    [command] = decision.commands
    counted = 0
    decision = decide_all(
        playbook, decision.state, [CommandCompleted(command.command_id)], new_id=lambda: next(ids)
    )
    assert counted == 1
    entered = [e.step for e in decision.events if e.event_type == "step.enter"]
    assert entered == ["s0", "s1", "s2", "s3", "s4"]  # with start: the limit of 6
    assert decision.state.status == "FAILED" and "6 step runs" in (decision.state.error or "")


def test_a_step_s_targets_are_worked_out_once() -> None:
    playbook = parse_playbook(
        HEAD + "workflow:\n  - {step: start, tool: {kind: noop}, next: [a, b]}\n"
        "  - {step: a, tool: {kind: noop}}\n  - {step: b, tool: {kind: noop}}\n"
    )
    start = playbook.step("start")
    assert start.targets == ("a", "b") and start.targets is start.targets
