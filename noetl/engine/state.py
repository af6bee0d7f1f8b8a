"""Execution state: everything the engine needs to decide, as plain JSON-able data.

The state is a fold of the execution's incoming events; `noetl.execution.state` stores the
latest snapshot and a replay test proves fold(events) equals it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from operator import itemgetter
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
    # an iteration failed and an arc may route the failure: no more are issued, and the step
    # fails with this error once the iterations in flight have finished
    failing: str | None = None
    failing_fields: dict[str, Any] | None = None  # its `output.error` fields, if any

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
            self.failing,
            self.failing_fields,
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
            **({"failing": self.failing} if self.failing is not None else {}),
            **({"failing_fields": self.failing_fields} if self.failing_fields else {}),
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
        """Status and runs, and of the rest only what is set: the snapshot holds one entry
        per step and is written by every report, so an entry left at its defaults is small."""
        entry: dict[str, Any] = {"status": self.status, "runs": self.runs}
        if self.arrived:
            entry["arrived"] = self.arrived
        if self.dead:
            entry["dead"] = self.dead
        if self.loop is not None:
            entry["loop"] = self.loop.to_json()
        if self.came_from is not None:
            entry["came_from"] = self.came_from
        return entry


def _parsed(raw: Mapping[str, Any]) -> StepState:
    """An entry as `StepState.to_json` writes it, or as it was written before with every
    field (a snapshot stored by an earlier version)."""
    loop = raw.get("loop")
    return StepState(
        raw["status"],
        raw["runs"],
        list(raw.get("arrived") or ()),
        list(raw.get("dead") or ()),
        LoopState(**loop) if loop else None,
        raw.get("came_from"),
    )


class StepStates(MutableMapping[str, StepState]):
    """Step states by name, each parsed from the snapshot only when read.

    A decision reads a few steps. Parsing every step of the snapshot into a `StepState` and
    serialising each back (`from_json`, `to_json`: once per decision in the server) made a
    decision's cost grow with the steps already run. Here the snapshot's step entries stay
    as they came (`_json`, never changed: mappings copied from one another share it); the
    states set since (`_states`) lie over them, and `to_json` lays the second over the first.

    A state read here and not set is parsed once and kept for reading (`_seen`): it is not
    to be changed in place (its entry goes out as it came). To change one, change a
    `writable` copy and set it, as the engine does; `ExecutionState.copy` sets them all."""

    __slots__ = ("_json", "_json_runs", "_seen", "_states")

    def __init__(self, states: Mapping[str, StepState] | None = None) -> None:
        self._json: Mapping[str, Mapping[str, Any]] = {}
        self._json_runs: int | None = 0  # runs of the `_json` entries, once counted
        self._seen: dict[str, StepState] = {}  # `_json` entries parsed to be read
        self._states: dict[str, StepState] = dict(states or {})

    @classmethod
    def from_json(cls, raw: Mapping[str, Mapping[str, Any]]) -> StepStates:
        states = cls()
        states._json, states._json_runs = raw, None
        return states

    def shared(self) -> StepStates:
        """A mapping holding the same states: change one only after replacing it."""
        states = StepStates(self._states)
        states._json, states._json_runs, states._seen = self._json, self._json_runs, self._seen
        return states

    def writable(self, name: str) -> StepState:
        """The step's state as a new object the caller owns (a copy, or parsed anew)."""
        state = self._states.get(name)
        return state.copy() if state is not None else _parsed(self._json[name])

    def seal(self) -> None:
        """Fold the states set into the entries, as their JSON. A decision has ended: its
        states are final (the next decision copies any it changes), so a state held for
        the next decision is not rebuilt by every later copy and `to_json`."""
        if not self._states:
            return
        written = {name: state.to_json() for name, state in self._states.items()}
        runs = self._json_runs
        if runs is not None:
            for name, state in self._states.items():
                runs += state.runs - (int(self._json[name]["runs"]) if name in self._json else 0)
        # new mappings: `_json` and `_seen` may be shared with the state decided from
        self._json, self._json_runs = {**self._json, **written}, runs
        self._seen, self._states = {**self._seen, **self._states}, {}

    def to_json(self) -> dict[str, Any]:
        states = {name: state.to_json() for name, state in self._states.items()}
        return {**self._json, **states} if self._json else states

    def runs(self) -> int:
        """Runs of all steps together, parsing none (the `max_step_runs` limit)."""
        if self._json_runs is None:
            self._json_runs = sum(map(_RUNS, self._json.values()))
        total = self._json_runs
        for name, state in self._states.items():
            total += state.runs
            if name in self._json:
                total -= int(self._json[name]["runs"])
        return total

    def __getitem__(self, name: str) -> StepState:
        state = self._states.get(name)
        if state is None:
            state = self._seen.get(name)
            if state is None:
                state = self._seen[name] = _parsed(self._json[name])
        return state

    def __setitem__(self, name: str, state: StepState) -> None:
        self._states[name] = state

    def __delitem__(self, name: str) -> None:
        if name in self._json:  # never changed in place: copied (rare: the engine never does)
            self._json = {key: value for key, value in self._json.items() if key != name}
            self._json_runs = None
            self._seen = {key: value for key, value in self._seen.items() if key != name}
            self._states.pop(name, None)
        else:
            del self._states[name]

    def __contains__(self, name: object) -> bool:
        return name in self._states or name in self._json

    def __iter__(self) -> Iterator[str]:
        yield from self._json
        yield from (name for name in self._states if name not in self._json)

    def __len__(self) -> int:
        return len(self._json) + sum(name not in self._json for name in self._states)

    def __repr__(self) -> str:
        return f"StepStates({dict(self.items())!r})"


_RUNS = itemgetter("runs")


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
    # a plain mapping given here becomes a `StepStates`
    steps: MutableMapping[str, StepState] = field(default_factory=StepStates)
    commands: dict[str, CommandRef] = field(default_factory=dict)  # issued, not yet finished
    result: Any = None
    error: str | None = None
    last_step: str | None = None  # the step whose branch ended last: its result is the result
    # finished loops whose `results` are read from the event log: step → run
    collected: dict[str, int] = field(default_factory=dict)
    reuse: dict[str, dict[str, Any]] = field(default_factory=dict)  # a re-run's recorded commands
    started_at: str | None = None  # ISO-8601 UTC: `now()` in the engine's templates

    def __post_init__(self) -> None:
        if not isinstance(self.steps, StepStates):
            self.steps = StepStates(self.steps)

    @property
    def step_states(self) -> StepStates:
        assert isinstance(self.steps, StepStates)  # __post_init__; assigned only such
        return self.steps

    def copy(self) -> ExecutionState:
        """A copy the engine may change. Values it only ever replaces (workload, variables,
        results, command refs) are shared; containers it changes in place are copied."""
        copied = self.copy_on_write()
        copied.steps = StepStates({name: step.copy() for name, step in self.steps.items()})
        return copied

    def copy_on_write(self) -> ExecutionState:
        """`copy`, except that the step states are shared: whoever changes one replaces it
        by its `copy` first (the engine does, `_Run.step_state`). A decision then costs what
        it touches, not one copy per step of the execution."""
        return ExecutionState(
            self.execution_id,
            self.status,
            self.workload,
            self.variables,
            dict(self.results),
            self.step_states.shared(),
            dict(self.commands),
            self.result,
            self.error,
            self.last_step,
            dict(self.collected),
            self.reuse,
            self.started_at,
        )

    def step_runs(self) -> int:
        """Runs of all steps together: the `max_step_runs` limit."""
        return self.step_states.runs()

    def to_json(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "status": self.status,
            "workload": self.workload,
            "variables": self.variables,
            "results": self.results,
            "steps": self.step_states.to_json(),
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
        return cls(
            execution_id=int(data["execution_id"]),
            status=data["status"],
            workload=data["workload"],
            variables=data["variables"],
            results=data["results"],
            steps=StepStates.from_json(data.get("steps", {})),
            commands={cid: CommandRef(**ref) for cid, ref in data["commands"].items()},
            result=data.get("result"),
            error=data.get("error"),
            last_step=data.get("last_step"),
            collected=dict(data.get("collected") or {}),
            reuse=data.get("reuse") or {},
            started_at=data.get("started_at"),
        )
