"""Static facts about a playbook's step graph: reachability and forward (non-back) edges."""

from __future__ import annotations

from functools import lru_cache

from noetl.dsl.model import Playbook


@lru_cache(maxsize=256)
def back_edges(playbook: Playbook) -> frozenset[tuple[str, str]]:
    """Edges that close a cycle in a depth-first walk from the entry (pagination, retries)."""
    found: set[tuple[str, str]] = set()
    on_path: set[str] = set()
    seen: set[str] = set()
    stack: list[tuple[str, int]] = [(playbook.entry, 0)]
    on_path.add(playbook.entry)
    seen.add(playbook.entry)
    while stack:
        name, index = stack.pop()
        targets = playbook.step(name).targets
        if index < len(targets):
            stack.append((name, index + 1))
            target = targets[index]
            if target in on_path:
                found.add((name, target))
            elif target not in seen:
                seen.add(target)
                on_path.add(target)
                stack.append((target, 0))
        else:
            on_path.discard(name)
    return frozenset(found)


@lru_cache(maxsize=256)
def reachable(playbook: Playbook) -> frozenset[str]:
    seen = {playbook.entry}
    todo = [playbook.entry]
    while todo:
        for target in playbook.step(todo.pop()).targets:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return frozenset(seen)


@lru_cache(maxsize=256)
def forward_upstreams(playbook: Playbook) -> dict[str, frozenset[str]]:
    """For each step, the reachable steps with a forward arc into it: its fan-in barrier."""
    back = back_edges(playbook)
    live = reachable(playbook)
    result: dict[str, set[str]] = {name: set() for name in playbook.steps}
    for name in live:
        for target in playbook.step(name).targets:
            if (name, target) not in back:
                result[target].add(name)
    return {name: frozenset(ups) for name, ups in result.items()}
