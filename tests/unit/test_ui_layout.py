"""The UI's graph layout and its polling cache: pure, no browser."""

from __future__ import annotations

import pytest

from noetl.dsl import parse_playbook
from noetl.ui.layout import HEIGHT, back_arcs, layers, layout
from noetl.ui.snapshots import Snapshots, progress_of


def _playbook(steps: str) -> str:
    return f"""
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: shape, path: tests/shape}}
workflow:
{steps}
"""


FAN = _playbook("""
  - step: start
    tool: {kind: noop}
    next:
      spec: {mode: inclusive}
      arcs: [{step: a}, {step: b, when: "{{ 1 > 0 }}"}, {step: side}]
  - step: a
    tool: {kind: noop}
    next: [deep]
  - step: deep
    tool: {kind: noop}
    next: [join]
  - step: b
    tool: {kind: noop}
    next: [join]
  - step: side
    tool: {kind: noop}
  - step: join
    tool: {kind: noop}
""")

CYCLE = _playbook("""
  - step: start
    tool: {kind: noop}
    next: [fetch]
  - step: fetch
    tool: {kind: noop}
    next:
      - step: fetch
        when: "{{ false }}"
      - step: start
        when: "{{ false }}"
      - step: end
  - step: end
    tool: {kind: noop}
  - step: orphan_a
    tool: {kind: noop}
    next: [orphan_b]
  - step: orphan_b
    tool: {kind: noop}
    next: [orphan_a]
""")


def test_a_fan_in_sits_below_the_longest_of_its_branches() -> None:
    playbook = parse_playbook(FAN)
    depth = layers(playbook, back_arcs(playbook))
    assert depth == {"start": 0, "a": 1, "b": 1, "side": 1, "deep": 2, "join": 3}
    boxes = {box.step: box for box in layout(playbook).boxes}
    assert boxes["join"].y > boxes["deep"].y > boxes["a"].y > boxes["start"].y
    assert boxes["a"].y == boxes["b"].y == boxes["side"].y
    assert len({boxes[n].x for n in ("a", "b", "side")}) == 3  # side by side, not stacked


def test_every_arc_is_drawn_once_with_its_condition_and_mode() -> None:
    drawing = layout(parse_playbook(FAN))
    arcs = {(line.source, line.target): line for line in drawing.lines}
    assert set(arcs) == {
        ("start", "a"),
        ("start", "b"),
        ("start", "side"),
        ("a", "deep"),
        ("deep", "join"),
        ("b", "join"),
    }
    assert arcs[("start", "b")].when == "{{ 1 > 0 }}"
    assert arcs[("start", "a")].mode == "inclusive"
    assert not any(line.back for line in drawing.lines)
    assert all(line.path.startswith("M") for line in drawing.lines)


def test_cycles_self_loops_and_unreachable_cycles_are_back_arcs_and_layout_ends() -> None:
    playbook = parse_playbook(CYCLE)
    back = back_arcs(playbook)
    assert ("fetch", "fetch") in back
    assert ("fetch", "start") in back
    assert len([arc for arc in back if arc[0].startswith("orphan")]) == 1
    drawing = layout(playbook)
    assert {box.step for box in drawing.boxes} == set(playbook.steps)
    drawn_back = {(line.source, line.target) for line in drawing.lines if line.back}
    assert drawn_back == set(back)
    assert drawing.height >= HEIGHT * 3
    assert all(0 <= box.x < drawing.width and 0 <= box.y < drawing.height for box in drawing.boxes)


def test_loop_steps_say_how_they_iterate() -> None:
    playbook = parse_playbook(
        _playbook("""
  - step: start
    loop: {in: "{{ [1, 2] }}", iterator: x, spec: {mode: parallel}}
    tool: {kind: python, code: "result = 1"}
""")
    )
    (box,) = layout(playbook).boxes
    assert box.kind == "python"
    assert box.loop == "parallel over {{ [1, 2] }}"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_snapshots_share_one_load_within_max_age_and_reload_after() -> None:
    clock = Clock()
    cache: Snapshots[int, int] = Snapshots(max_age=1.0, size=2, clock=clock)
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        return loads

    assert [await cache.get(1, load) for _ in range(20)] == [1] * 20
    clock.now += 1.0
    assert await cache.get(1, load) == 2
    await cache.get(2, load)
    await cache.get(3, load)  # evicts 1, the least recently loaded
    assert await cache.get(1, load) == 5


async def test_a_failed_load_is_not_cached() -> None:
    cache: Snapshots[int, int] = Snapshots(max_age=10.0)

    async def fail() -> int:
        raise LookupError("gone")

    async def value() -> int:
        return 7

    with pytest.raises(LookupError):
        await cache.get(1, fail)
    assert await cache.get(1, value) == 7


def test_progress_leaves_out_loop_items_and_results_and_reads_both_state_shapes() -> None:
    with_items = {"items": list(range(5)), "results": [1] * 5, "succeeded": 5, "failed": 0}
    counters = {"count": 100_000, "succeeded": 7, "failed": 1}
    state = {
        "steps": {
            "a": {"status": "completed", "runs": 1, "loop": {**with_items, "in_flight": 0}},
            "b": {"status": "running", "runs": 1, "loop": {**counters, "in_flight": 3}},
            "c": {"status": "waiting", "runs": 0, "loop": None},
        },
        "commands": {"x": {}, "y": {}},
    }
    progress = progress_of({"state": state})
    assert progress == {
        "steps": [
            {
                "step": "a",
                "status": "completed",
                "runs": 1,
                "loop": {"count": 5, "succeeded": 5, "failed": 0, "in_flight": 0},
            },
            {
                "step": "b",
                "status": "running",
                "runs": 1,
                "loop": {"count": 100_000, "succeeded": 7, "failed": 1, "in_flight": 3},
            },
            {"step": "c", "status": "waiting", "runs": 0},
        ],
        "pending_commands": 2,
    }
