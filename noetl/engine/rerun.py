"""Re-run from failure: which recorded commands a new execution reuses instead of running.

A re-run is a new execution of a playbook that restarts at one step (`from_step`) or at the
steps that failed or were left unfinished (`from_failed`). The restart steps and every step
reachable from them run fresh. Every other step that completed in the original execution is
reused: when the new execution reaches one of its commands, the engine records the original
result (`command.reused`) instead of issuing it, and goes on exactly as if the command had just
completed: the step's `set`, its arcs' conditions and `set`, and the variables a pipeline set
on the worker all apply again, so later steps see the same values.

A failed loop step that is restarted reuses the iterations that succeeded in its last run,
provided the item at that index is the same; only the failed (and never run) iterations run.
A reused iteration's result is in its `command.reused` event, where the loop's results are
read from (engine/loops.py).

Pure: `plan` reads the original's state and its completed commands, nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from noetl.dsl.model import Playbook
from noetl.engine.state import COMPLETED, FAILED, RUNNING, ExecutionState
from noetl.errors import RequestError

_KEY_TAIL = re.compile(r"^(?:#(\d+))?(?:\[(\d+)\])?$")


def command_key(step: str, run: int, iteration: int | None = None) -> str:
    """A command's id without its execution: the same in an execution and its re-run."""
    key = step + (f"#{run}" if run > 1 else "")
    return key + (f"[{iteration}]" if iteration is not None else "")


@dataclass(frozen=True)
class Recorded:
    """A command that completed in the original execution."""

    key: str  # command_key(step, run, iteration)
    step: str
    result: Any = None
    variables: Mapping[str, Any] | None = None

    @property
    def run_and_iteration(self) -> tuple[int, int | None]:
        match = _KEY_TAIL.match(self.key[len(self.step) :])
        if not self.key.startswith(self.step) or match is None:
            raise ValueError(f"command {self.key!r} is not of step {self.step!r}")
        run, iteration = match.groups()
        return int(run or 1), None if iteration is None else int(iteration)


@dataclass(frozen=True)
class RerunPlan:
    restart: tuple[str, ...]  # the steps the re-run starts over at
    fresh: frozenset[str]  # the restart steps and everything reachable from them
    reuse: dict[str, dict[str, Any]]  # command key → {"result", "variables"?, "item"?}

    def to_json(self) -> dict[str, Any]:
        return {"restart": list(self.restart), "reuse": self.reuse}


def plan(
    playbook: Playbook,
    original: ExecutionState,
    completed: Iterable[Recorded],
    *,
    from_step: str | None = None,
    items: Mapping[tuple[str, int], Sequence[Any]] | None = None,
) -> RerunPlan:
    """What a re-run of `original` reuses. `from_step` None means from the failed steps.
    `items`: the items of the original's loops over a list, by (step, run) (a loop over an
    integer iterates its indexes); a reused iteration must meet the same item again.

    Raises RequestError when the restart step is unknown or nothing failed."""
    restart = _restart(playbook, original, from_step)
    fresh = _reachable_from(playbook, restart)
    reuse: dict[str, dict[str, Any]] = {}
    for record in completed:
        if record.step not in playbook.steps or _cursor(playbook, record.step):
            continue  # a cursor loop's rows come from a live table: it always runs afresh
        run, iteration = record.run_and_iteration
        before = original.steps.get(record.step)
        last_run = before is not None and run == before.runs
        if record.step in fresh:
            failed_loop = before is not None and before.status == FAILED and before.loop
            if not (record.step in restart and failed_loop and last_run and iteration is not None):
                continue
        elif before is None or before.status not in {COMPLETED, FAILED, RUNNING}:
            continue
        entry: dict[str, Any] = {"result": record.result}
        if record.variables:
            entry["variables"] = dict(record.variables)
        if iteration is not None:
            known = (items or {}).get((record.step, run))
            loop = before.loop if before is not None and last_run else None
            if known is not None and iteration < len(known):
                entry["item"] = known[iteration]
            elif loop is not None and not loop.stored:
                entry["item"] = iteration
        reuse[record.key] = entry
    return RerunPlan(restart, fresh, reuse)


def _cursor(playbook: Playbook, step: str) -> bool:
    loop = playbook.step(step).loop
    return loop is not None and loop.mode == "cursor"


def _restart(
    playbook: Playbook, original: ExecutionState, from_step: str | None
) -> tuple[str, ...]:
    if from_step is not None:
        if from_step not in playbook.steps:
            known = ", ".join(playbook.steps)
            raise RequestError(f"step {from_step!r} is not in the playbook (steps: {known})")
        return (from_step,)
    restart = tuple(
        name
        for name, st in original.steps.items()
        if st.status in {FAILED, RUNNING} and name in playbook.steps
    )
    if not restart:
        raise RequestError(
            f"execution {original.execution_id} has no failed or unfinished step;"
            " give `from_step` to re-run from a step"
        )
    return restart


def reusable(entry: Mapping[str, Any] | None, iteration: int | None, item: Any) -> bool:
    """Whether a recorded command stands in for the one about to be issued: a loop iteration
    only over the same item."""
    if entry is None:
        return False
    return iteration is None or "item" not in entry or entry["item"] == item


def _reachable_from(playbook: Playbook, starts: Iterable[str]) -> frozenset[str]:
    seen = set(starts)
    todo = list(seen)
    while todo:
        for target in playbook.step(todo.pop()).targets:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return frozenset(seen)
