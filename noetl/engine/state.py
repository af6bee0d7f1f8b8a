"""Execution state: everything the engine needs to decide, as plain JSON-able data.

The state is a fold of the execution's incoming events; `noetl.execution.state` stores the
latest snapshot and a replay test proves fold(events) equals it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from noetl.protocol.events import StepStatus

WAITING = StepStatus.WAITING.value
RUNNING = StepStatus.RUNNING.value
COMPLETED = StepStatus.COMPLETED.value
FAILED = StepStatus.FAILED.value
SKIPPED = StepStatus.SKIPPED.value


@dataclass(slots=True)
class LoopState:
    """A loop's counters only: its items and results live in the event log (engine/loops.py),
    so the snapshot does not grow with the number of items."""

    count: int
    stored: bool = False  # the items are a list in the step.enter event, not range(count)
    next_index: int = 0
    in_flight: int = 0
    succeeded: int = 0
    failed: int = 0
    # a cursor loop: `count` grows by each claimed frame; only the current frame's items are
    # kept (`rows`, the first of them at index `base`), at most a frame's worth
    cursor: bool = False
    frames: int = 0  # claims issued so far
    base: int = 0
    rows: list[Any] = field(default_factory=list)
    cap: int = 1  # iterations of a frame in flight at once (`frame.row_concurrency`)

    @property
    def finished(self) -> bool:
        """Every item issued has finished (for a cursor loop: every item of this frame)."""
        return self.next_index >= self.count and self.in_flight == 0

    def copy(self) -> LoopState:
        # the constructor, not dataclasses.replace: copies run for every step of every
        # decision, and replace() costs ~10x a plain call
        return LoopState(
            self.count,
            self.stored,
            self.next_index,
            self.in_flight,
            self.succeeded,
            self.failed,
            self.cursor,
            self.frames,
            self.base,
            self.rows,  # replaced, never changed in place: shared
            self.cap,
        )

    def to_json(self) -> dict[str, Any]:
        cursor = {"cursor": True, "frames": self.frames, "base": self.base, "rows": self.rows}
        return {
            "count": self.count,
            "stored": self.stored,
            "next_index": self.next_index,
            "in_flight": self.in_flight,
            "succeeded": self.succeeded,
            "failed": self.failed,
            **({**cursor, "cap": self.cap} if self.cursor else {}),
        }


@dataclass(slots=True)
class StepState:
    status: str = WAITING
    runs: int = 0
    arrived: list[str] = field(default_factory=list)  # upstreams that fired into this step
    dead: list[str] = field(default_factory=list)  # upstreams that settled without firing into it
    loop: LoopState | None = None
    came_from: str | None = None  # the upstream whose arc fired it last: `{{ result }}`

    def copy(self) -> StepState:
        return StepState(
            self.status,
            self.runs,
            list(self.arrived),
            list(self.dead),
            self.loop.copy() if self.loop else None,
            self.came_from,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "runs": self.runs,
            "arrived": self.arrived,
            "dead": self.dead,
            "loop": self.loop.to_json() if self.loop else None,
            "came_from": self.came_from,
        }


@dataclass(frozen=True)
class CommandRef:
    step: str
    run: int
    iteration: int | None = None
    frame: int | None = None  # the claim of a cursor loop's frame `frame`

    def to_json(self) -> dict[str, Any]:
        ref = {"step": self.step, "run": self.run, "iteration": self.iteration}
        return ref if self.frame is None else {**ref, "frame": self.frame}


@dataclass
class ExecutionState:
    execution_id: int
    status: str = "RUNNING"
    workload: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, StepState] = field(default_factory=dict)
    commands: dict[str, CommandRef] = field(default_factory=dict)  # issued, not yet finished
    result: Any = None
    error: str | None = None
    last_step: str | None = None  # the step whose branch ended last: its result is the result
    # finished loops whose `results` are read from the event log: step → run
    collected: dict[str, int] = field(default_factory=dict)
    reuse: dict[str, dict[str, Any]] = field(default_factory=dict)  # a re-run's recorded commands
    started_at: str | None = None  # ISO-8601 UTC: `now()` in the engine's templates

    def copy(self) -> ExecutionState:
        """A copy the engine may change. Values it only ever replaces (workload, variables,
        results, command refs) are shared; containers it changes in place are copied."""
        copied = self.copy_on_write()
        copied.steps = {name: step.copy() for name, step in self.steps.items()}
        return copied

    def copy_on_write(self) -> ExecutionState:
        """`copy`, except that the step states are shared: whoever changes one replaces it
        by its `copy` first (the engine does, `_Run.step_state`). A decision then costs what
        it touches, not one copy per step of the execution."""
        copied = ExecutionState(
            self.execution_id,
            self.status,
            self.workload,
            self.variables,
            dict(self.results),
            dict(self.steps),
            dict(self.commands),
            self.result,
            self.error,
            self.last_step,
            dict(self.collected),
            self.reuse,
            self.started_at,
        )
        if "_runs" in self.__dict__:
            copied.__dict__["_runs"] = self.__dict__["_runs"]
        return copied

    def step_runs(self) -> int:
        """Runs of all steps together (the `max_step_runs` limit). Counted once per state
        object and then kept up to date by `count_run`, so a decision does not walk every
        step; whoever changes a step's `runs` other than through `count_run` copies the
        state with `from_json(to_json())`."""
        total = self.__dict__.get("_runs")
        if total is None:
            total = sum(step.runs for step in self.steps.values())
            self.__dict__["_runs"] = total
        return int(total)

    def count_run(self, step: StepState) -> int:
        """Start one more run of `step` (a step state this state owns): its new `runs`."""
        self.__dict__["_runs"] = self.step_runs() + 1
        step.runs += 1
        return step.runs

    def to_json(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "status": self.status,
            "workload": self.workload,
            "variables": self.variables,
            "results": self.results,
            "steps": {name: step.to_json() for name, step in self.steps.items()},
            "commands": {command_id: ref.to_json() for command_id, ref in self.commands.items()},
            "result": self.result,
            "error": self.error,
            "last_step": self.last_step,
            "collected": self.collected,
            **({"reuse": self.reuse} if self.reuse else {}),
            **({"started_at": self.started_at} if self.started_at else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutionState:
        steps = {}
        runs = 0
        for name, raw in data.get("steps", {}).items():  # per step of every decision: lean
            loop = raw.get("loop")
            step = StepState(
                raw["status"],
                raw["runs"],
                list(raw["arrived"]),
                list(raw["dead"]),
                LoopState(**loop) if loop else None,
                raw.get("came_from"),
            )
            steps[name] = step
            runs += step.runs
        state = cls(
            execution_id=int(data["execution_id"]),
            status=data["status"],
            workload=data["workload"],
            variables=data["variables"],
            results=data["results"],
            steps=steps,
            commands={cid: CommandRef(**ref) for cid, ref in data["commands"].items()},
            result=data.get("result"),
            error=data.get("error"),
            last_step=data.get("last_step"),
            collected=dict(data.get("collected") or {}),
            reuse=data.get("reuse") or {},
            started_at=data.get("started_at"),
        )
        state.__dict__["_runs"] = runs
        return state
