"""Where each step of a playbook goes in the UI's graph: a layered drawing, computed here.

Pure: a playbook in, boxes and SVG path strings out. Steps are layered top to bottom by the
longest forward path from a root (so a fan-in sits below all of its upstreams), ordered inside
a layer by the mean position of their neighbours, and arcs that close a cycle (pagination,
retry loops) are drawn as curves on the right-hand side."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from noetl.dsl.model import Playbook

WIDTH = 200
HEIGHT = 64
GAP_X = 48
GAP_Y = 72
MARGIN = 24
SWEEPS = 4


@dataclass(frozen=True)
class Box:
    step: str
    kind: str  # the tool kind, or "pipeline"
    loop: str | None  # "parallel over {{ items }}" for a loop step
    desc: str
    x: int
    y: int
    layer: int


@dataclass(frozen=True)
class Line:
    source: str
    target: str
    when: str | None
    mode: str  # exclusive | inclusive: how the source's arcs are taken
    back: bool  # closes a cycle
    path: str  # SVG path data
    label_x: int
    label_y: int


@dataclass(frozen=True)
class Drawing:
    entry: str
    boxes: tuple[Box, ...]
    lines: tuple[Line, ...]
    width: int
    height: int


def back_arcs(playbook: Playbook) -> frozenset[tuple[str, str]]:
    """Arcs that close a cycle in a depth-first walk from the entry, then from every step not
    reached yet (in document order), so unreachable cycles are broken too."""
    found: set[tuple[str, str]] = set()
    done: set[str] = set()
    for root in (playbook.entry, *playbook.steps):
        if root in done:
            continue
        on_path = {root}
        stack: list[tuple[str, int]] = [(root, 0)]
        done.add(root)
        while stack:
            name, index = stack.pop()
            targets = playbook.step(name).targets
            if index >= len(targets):
                on_path.discard(name)
                continue
            stack.append((name, index + 1))
            target = targets[index]
            if target in on_path:
                found.add((name, target))
            elif target not in done:
                done.add(target)
                on_path.add(target)
                stack.append((target, 0))
    return frozenset(found)


def layers(playbook: Playbook, back: frozenset[tuple[str, str]]) -> dict[str, int]:
    """Longest forward path from a root to each step."""
    ups: dict[str, list[str]] = {name: [] for name in playbook.steps}
    for name, step in playbook.steps.items():
        for target in step.targets:
            if (name, target) not in back and name not in ups[target]:
                ups[target].append(name)
    depth: dict[str, int] = {}
    remaining = dict(ups)
    while remaining:  # forward arcs form a DAG, so each pass places at least one step
        ready = [n for n, us in remaining.items() if all(u in depth for u in us)]
        for name in ready:
            depth[name] = max((depth[u] + 1 for u in remaining[name]), default=0)
            del remaining[name]
    return depth


def _order(
    playbook: Playbook, depth: Mapping[str, int], back: frozenset[tuple[str, str]]
) -> list[list[str]]:
    rows: list[list[str]] = [[] for _ in range(max(depth.values(), default=0) + 1)]
    for name in playbook.steps:  # document order first
        rows[depth[name]].append(name)
    forward = [
        (name, target)
        for name, step in playbook.steps.items()
        for target in step.targets
        if (name, target) not in back
    ]
    for sweep in range(SWEEPS):
        downward = sweep % 2 == 0
        position = {name: i for row in rows for i, name in enumerate(row)}
        for row in rows[1:] if downward else rows[-2::-1]:
            if downward:
                neighbours = {n: [position[s] for s, t in forward if t == n] for n in row}
            else:
                neighbours = {n: [position[t] for s, t in forward if s == n] for n in row}
            current = {name: i for i, name in enumerate(row)}
            keys = {name: _mean(neighbours[name], current[name]) for name in row}
            row.sort(key=keys.__getitem__)
            position.update({name: i for i, name in enumerate(row)})
    return rows


def _mean(values: list[int], default: int) -> float:
    return sum(values) / len(values) if values else default


def _kind(playbook: Playbook, name: str) -> str:
    step = playbook.step(name)
    return "pipeline" if step.pipeline else step.tool.kind


def _loop(playbook: Playbook, name: str) -> str | None:
    loop = playbook.step(name).loop
    if loop is None:
        return None
    return f"{loop.mode} over {loop.collection}"


def layout(playbook: Playbook) -> Drawing:
    back = back_arcs(playbook)
    depth = layers(playbook, back)
    rows = _order(playbook, depth, back)
    widest = max(len(row) for row in rows)
    width = 2 * MARGIN + widest * WIDTH + (widest - 1) * GAP_X + (GAP_X * 2 if back else 0)
    boxes: dict[str, Box] = {}
    for number, row in enumerate(rows):
        indent = (widest - len(row)) * (WIDTH + GAP_X) // 2
        for index, name in enumerate(row):
            step = playbook.step(name)
            boxes[name] = Box(
                step=name,
                kind=_kind(playbook, name),
                loop=_loop(playbook, name),
                desc=step.desc,
                x=MARGIN + indent + index * (WIDTH + GAP_X),
                y=MARGIN + number * (HEIGHT + GAP_Y),
                layer=number,
            )
    lines = []
    right = width - MARGIN // 2
    for name, step in playbook.steps.items():
        mode = step.next.mode if step.next else "exclusive"
        for arc in step.next.arcs if step.next else ():
            lines.append(_line(boxes[name], boxes[arc.step], arc.when, mode, back, right))
    height = 2 * MARGIN + len(rows) * HEIGHT + (len(rows) - 1) * GAP_Y
    ordered = tuple(boxes[name] for name in playbook.steps)
    return Drawing(playbook.entry, ordered, tuple(lines), width, height)


def _line(
    source: Box,
    target: Box,
    when: str | None,
    mode: str,
    back: frozenset[tuple[str, str]],
    right: int,
) -> Line:
    is_back = (source.step, target.step) in back
    if is_back:  # out of the source's right side, round the right margin, into the target's
        x1, y1 = source.x + WIDTH, source.y + HEIGHT // 2 + 10
        x2, y2 = target.x + WIDTH, target.y + HEIGHT // 2 - 10
        bend = max(right, x1 + GAP_X, x2 + GAP_X)
        path = f"M{x1},{y1} C{bend},{y1} {bend},{y2} {x2 + 6},{y2}"
        return Line(source.step, target.step, when, mode, True, path, bend - 8, (y1 + y2) // 2)
    x1, y1 = source.x + WIDTH // 2, source.y + HEIGHT
    x2, y2 = target.x + WIDTH // 2, target.y - 6
    middle = (y1 + y2) // 2
    path = f"M{x1},{y1} C{x1},{middle} {x2},{middle} {x2},{y2}"
    return Line(source.step, target.step, when, mode, False, path, (x1 + x2) // 2, middle)
