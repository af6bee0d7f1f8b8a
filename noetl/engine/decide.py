"""decide(playbook, state, event) → Decision: the whole of NoETL's orchestration logic.

Pure: the only inputs are the arguments (ids come from `new_id`), the only output is the
returned `Decision`. A playbook failure is a decision, never an exception.

Order after a step's command completes (DSL §3): step `set` → arcs' `when` → the fired arcs'
`set` → dispatch of the targets. A target with several forward upstreams (a fan-in) runs once
all of them have settled; upstreams that will not fire into it are recorded as dead, and a
step whose every upstream is dead is skipped (dead-path elimination), so a join never waits
forever.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from noetl.dsl import semantics
from noetl.dsl.bounds import TemplateLimitError
from noetl.dsl.model import Arc, Playbook, Step
from noetl.dsl.parse import MAX_IN_FLIGHT
from noetl.dsl.template import clock, plain, referenced_names, render, render_workload
from noetl.engine import rerun
from noetl.engine.graph import back_edges, forward_upstreams
from noetl.engine.loops import NO_DATA, LoopData, LoopKey, Need, NeedData, command_prefix
from noetl.engine.state import (
    COMPLETED,
    FAILED,
    RUNNING,
    SKIPPED,
    CommandRef,
    ExecutionState,
    LoopState,
    StepState,
)
from noetl.engine.steps import (
    MAX_CURSOR_ITEMS,
    claimed_rows,
    collection,
    cursor_claim,
    cursor_frame,
    loop_summary,
    names_in,
    names_in_whole,
    names_read,
    names_read_whole,
    reads_item_results,
    runs_on_worker,
)
from noetl.errors import TemplateError
from noetl.protocol.events import EventType, ExecutionStatus
from noetl.protocol.records import CommandRecord, EventRecord

DEFAULT_MAX_STEP_RUNS = 10_000  # step runs per execution unless the playbook or server says

# -- what goes in -----------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    workload: Mapping[str, Any]
    reuse: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # a re-run's, by key
    started_at: str | None = None  # ISO-8601 UTC, recorded by the server: the engine's `now()`


@dataclass(frozen=True)
class CommandCompleted:
    command_id: str
    result: Any = None
    variables: Mapping[str, Any] = field(default_factory=dict)  # `set` done on the worker
    problems: tuple[str, ...] = ()  # template problems met on the worker (semantics.assign)


@dataclass(frozen=True)
class CommandFailed:
    command_id: str
    error: str
    # `output.error` beyond the message, as the worker reported it (semantics.error_fields)
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CancelRequested:
    reason: str = "cancelled by request"


Incoming = Started | CommandCompleted | CommandFailed | CancelRequested

# -- what comes out ---------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    state: ExecutionState
    events: tuple[EventRecord, ...] = ()
    commands: tuple[CommandRecord, ...] = ()
    cancelled: tuple[str, ...] = ()  # command ids whose pending work is cancelled
    # data the engine lacked (engine/loops.py): nothing was decided; load it and decide again
    needs: tuple[Need, ...] = ()

    @property
    def finished(self) -> bool:
        return self.state.status != ExecutionStatus.RUNNING


def decide(
    playbook: Playbook,
    state: ExecutionState,
    event: Incoming,
    *,
    new_id: Callable[[], int],
    data: LoopData = NO_DATA,
) -> Decision:
    """Apply one incoming event. `state` is not modified; the new state is in the decision."""
    return decide_all(playbook, state, [event], new_id=new_id, data=data)


def decide_all(
    playbook: Playbook,
    state: ExecutionState,
    incoming: Sequence[Incoming],
    *,
    new_id: Callable[[], int],
    data: LoopData = NO_DATA,
) -> Decision:
    """Apply events in order, as `decide` would one after the other, copying the state once:
    the server hands a batch of concurrent reports for one execution to one transaction.

    `data` holds the loop items and results the state does not (engine/loops.py). When the
    decision needs more, it says so in `needs` and changes nothing: load, then call again.

    Never raises: an internal error (a bug) fails the execution with the error's name and
    message, so nothing is left RUNNING forever."""
    run = _Run(playbook, state.copy_on_write(), new_id, data)
    starts = (change.started_at for change in incoming if isinstance(change, Started))
    try:
        with clock(state.started_at or next(starts, None) or ""):
            run.apply(incoming)
    except NeedData as missing:
        return Decision(state, needs=(missing.need,))
    except Exception as exc:
        error = f"internal error in the engine: {type(exc).__name__}: {exc}"
        settled = state.copy_on_write()
        for change in incoming:  # their outcomes are recorded: nothing left to cancel
            if isinstance(change, CommandCompleted | CommandFailed):
                settled.commands.pop(change.command_id, None)
        return give_up(playbook, settled, error, new_id=new_id)
    run.state.step_states.seal()
    return Decision(run.state, tuple(run.events), tuple(run.commands), tuple(run.cancelled))


def give_up(
    playbook: Playbook, state: ExecutionState, error: str, *, new_id: Callable[[], int]
) -> Decision:
    """Fail the execution outright (the engine itself could not decide): nothing is left
    RUNNING, and pending commands are cancelled."""
    run = _Run(playbook, state.copy_on_write(), new_id)
    if run.running:
        run.finish(ExecutionStatus.FAILED, error=error)
    return Decision(run.state, tuple(run.events), tuple(run.commands), tuple(run.cancelled))


@dataclass
class _Run:
    playbook: Playbook
    state: ExecutionState
    new_id: Callable[[], int]
    data: LoopData = NO_DATA
    events: list[EventRecord] = field(default_factory=list)
    commands: list[CommandRecord] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)  # by step, for its step.exit
    entered: dict[LoopKey, Sequence[Any]] = field(default_factory=dict)  # items of loops entered
    fresh: dict[LoopKey, dict[int, Any]] = field(default_factory=dict)  # results decided here
    full: dict[str, Any] = field(default_factory=dict)  # finished loops' results, with `results`
    reused: deque[tuple[str, Mapping[str, Any]]] = field(default_factory=deque)
    _reuse_owned: bool = False  # the state's reuse map was copied and may be changed
    owned: set[str] = field(default_factory=set)  # steps whose state this run has copied
    # the execution's step runs, counted once per decision and then by each step entered (the
    # count walks every step state this decision changed: a fan-out to 8,000 steps was quadratic)
    runs_so_far: int | None = None

    def apply(self, incoming: Sequence[Incoming]) -> None:
        for event in incoming:
            if not self.running:
                return
            match event:
                case Started(workload=workload, reuse=reuse, started_at=started_at):
                    self.state.started_at = started_at
                    self.start(workload, reuse)
                case CommandCompleted(
                    command_id=command_id, result=result, variables=variables, problems=problems
                ):
                    self.command_completed(command_id, result, variables, problems)
                case CommandFailed(command_id=command_id, error=error, fields=fields):
                    self.command_failed(command_id, error, fields)
                case CancelRequested(reason=reason):
                    self.finish(ExecutionStatus.CANCELLED, error=reason)
            self.complete_reused()
            self.maybe_complete()

    # -- loop data kept out of the state ------------------------------------------------

    def need(self, names: frozenset[str] | set[str]) -> None:
        """Make the `results` of the finished loops among `names` readable by templates."""
        for name in names:
            if name in self.state.collected and name not in self.full:
                self.full[name] = self.collected_result(name)

    def collected_result(self, name: str) -> dict[str, Any]:
        run = self.state.collected[name]
        summary = self.state.results[name]
        count = int(summary["count"])
        fresh = self.fresh.get((name, run), {})
        results: list[Any] = [None] * count
        if len(fresh) < count:
            stored = self.data.results.get((name, run))
            if stored is None:
                raise NeedData(Need("results", name, run))
            known = min(len(stored), count)
            results[:known] = stored[:known]
        for index, value in fresh.items():
            results[index] = value
        return {"results": results, **summary}

    def result_of(self, name: str) -> Any:
        return self.full[name] if name in self.full else self.state.results.get(name)

    def item(self, step: str, run: int, loop: LoopState, index: int) -> Any:
        if loop.cursor:  # the current frame's
            return loop.rows[index - loop.base]
        if not loop.stored:
            return index
        items = self.entered.get((step, run))
        if items is None:
            items = self.data.items.get((step, run))
            if items is None:
                raise NeedData(Need("items", step, run))
        return items[index]

    # -- helpers ------------------------------------------------------------------------

    def emit(self, event_type: EventType, **fields: Any) -> None:
        self.events.append(
            EventRecord(self.state.execution_id, self.new_id(), event_type, **fields)
        )

    def step_state(self, name: str) -> StepState:
        """The step's state, to read or change: copied on first use (`copy_on_write`), so
        the state the decision was given is never changed and the others are not copied."""
        steps = self.state.step_states
        if name in self.owned:
            return steps[name]
        self.owned.add(name)
        st = steps[name] = steps.writable(name) if name in steps else StepState()
        return st

    def has_no_result_name(self) -> bool:
        """`result` is free for the step's own result (or its upstream's): no workload key
        or step is named `result`."""
        return "result" not in self.state.workload and "result" not in self.state.results

    @property
    def running(self) -> bool:
        return self.state.status == ExecutionStatus.RUNNING

    def context(self, **extra: Any) -> dict[str, Any]:
        state = self.state
        ctx: dict[str, Any] = {**state.workload, **state.variables}
        ctx.update(state.results)
        ctx.update(self.full)
        ctx.update(
            workload=state.workload,
            ctx=state.variables,
            vars=state.variables,
            **semantics.execution_names(state.execution_id),
        )
        if self.playbook.spec:  # root `spec` (upstream): rendered against the context
            ctx["spec"] = render(self.playbook.spec, ctx)
        ctx.update(extra)
        return ctx

    def apply_set(self, assignments: Mapping[str, Any], ctx: dict[str, Any]) -> list[str]:
        """Write `set` values into the execution variables; returns the template problems."""
        if not assignments:
            return []
        assigned = semantics.assign(self.state.variables, assignments, ctx)
        self.state.variables = assigned.variables  # copy on write: states share variables
        semantics.rescope(ctx, assigned)
        return list(assigned.problems)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, workload: Mapping[str, Any], reuse: Mapping[str, Any]) -> None:
        """The workload's template defaults are rendered once, here (upstream renders them at
        start): see `render_workload`. `env` is empty: the server's environment is not the
        playbook's business (its secrets would leak), so `env.X | default(...)` takes the
        default."""
        self.state.reuse = {key: dict(entry) for key, entry in reuse.items()}
        self._reuse_owned = True
        defaults = self.playbook.workload
        payload = {k: v for k, v in workload.items() if k not in defaults or defaults[k] != v}
        base = {**semantics.execution_names(self.state.execution_id), "env": {}}
        try:
            self.state.workload = render_workload(defaults, payload, base)
        except TemplateError as exc:
            self.state.workload = dict(workload)
            self.finish(ExecutionStatus.FAILED, error=f"workload: {exc}")
            return
        try:
            self.context()
        except TemplateError as exc:
            self.finish(ExecutionStatus.FAILED, error=f"root spec: {exc}")
            return
        self.enter(self.playbook.entry)

    def admitted(self, step: Step) -> tuple[bool, str | None]:
        """Step `spec.policy.admit.rules`: the first rule whose `when` holds decides."""
        self.need(names_in_whole(self.playbook, step.name, "admit"))
        ctx = self.context()
        for rule in step.admit:
            ok, problem = semantics.fires(rule["when"], ctx)
            if problem:
                return False, f"admit rule: {problem}"
            if ok:
                allow, problem = semantics.fires(rule["allow"], ctx)
                return allow, problem and f"admit rule: {problem}"
        return True, None

    def enter(self, name: str) -> None:
        step = self.playbook.step(name)
        st = self.step_state(name)
        limit = self.playbook.max_step_runs or DEFAULT_MAX_STEP_RUNS
        if self.runs_so_far is None:
            self.runs_so_far = self.state.step_runs()
        if self.runs_so_far >= limit:
            self.fail_step(
                name,
                f"the execution reached {limit} step runs (executor.spec.max_step_runs or"
                " NOETL_MAX_STEP_RUNS): a runaway loop?",
            )
            return
        if step.admit:
            allowed, problem = self.admitted(step)
            if not allowed:  # not admitted: the step is skipped, its targets see a dead path
                st.status, st.arrived, st.dead = SKIPPED, [], []
                payload = {"admit": False, **({"problems": [problem]} if problem else {})}
                self.emit(EventType.STEP_SKIPPED, step=name, status=SKIPPED, payload=payload)
                self.route(name, [])
                return
        self.runs_so_far += 1  # each branch below runs the step once more
        if step.loop is None:
            st.status, st.runs, st.arrived, st.dead, st.loop = RUNNING, st.runs + 1, [], [], None
            self.emit(EventType.STEP_ENTER, step=name, payload={"run": st.runs})
            self.issue(step, st.runs)
            return
        if step.loop.mode == "cursor":
            st.status, st.runs, st.arrived, st.dead = RUNNING, st.runs + 1, [], []
            st.loop = LoopState(count=0, cursor=True)
            self.emit(EventType.STEP_ENTER, step=name, payload={"run": st.runs, "cursor": True})
            self.claim(step, st)
            return
        problem, items = None, None
        try:
            self.need(names_in_whole(self.playbook, name, "collection"))
            items = collection(render(step.loop.collection, self.context()))
        except (TemplateError, TypeError) as exc:
            problem = f"loop collection: {exc}"
        st.status, st.runs, st.arrived, st.dead, st.loop = RUNNING, st.runs + 1, [], [], None
        entered: dict[str, Any] = {"run": st.runs}
        if items is not None and not isinstance(items, range):
            items = plain(items)
            entered["items"] = items  # the log keeps a list's items: the state only counts
            self.entered[(name, st.runs)] = items
        self.emit(EventType.STEP_ENTER, step=name, payload=entered)
        if problem is not None or items is None:
            self.fail_step(name, problem or "loop collection: no items")
            return
        st.loop = LoopState(count=len(items), stored=not isinstance(items, range))
        self.dispatch_iterations(step, st)

    def dispatch_iterations(self, step: Step, st: StepState) -> None:
        loop, spec = st.loop, step.loop
        assert loop is not None and spec is not None
        if loop.cursor:
            cap: int | None = loop.cap
        else:
            cap = 1 if spec.mode == "sequential" else self.max_in_flight(step)
        if cap is None:
            return
        while self.running and loop.in_flight < cap and loop.next_index < loop.count:
            index = loop.next_index
            loop.next_index += 1
            loop.in_flight += 1
            self.issue(step, st.runs, index)
        if self.running and loop.finished and st.status == RUNNING:
            if loop.cursor:  # the frame is done: claim the next one
                self.claim(step, st)
                return
            self.finish_loop(step.name, st)

    def finish_loop(self, name: str, st: StepState) -> None:
        assert st.loop is not None
        self.state.collected[name] = st.runs
        self.full.pop(name, None)
        self.complete_step(name, loop_summary(st.loop), semantics.LOOP_DONE)

    # -- cursor loops: claim a frame of rows, run the step per row, claim again ----------

    def claim(self, step: Step, st: StepState) -> None:
        """Issue the claim of a cursor loop's next frame: `loop.cursor.claim` rendered with
        `__frame_max_rows` (and `__frame_policy`) runs as a postgres command on a worker; the
        rows it returns are the frame (`frame_claimed`)."""
        loop, spec = st.loop, step.loop
        assert loop is not None and spec is not None and spec.cursor is not None
        if loop.count >= MAX_CURSOR_ITEMS:
            self.fail_step(
                step.name,
                f"cursor loop: {loop.count:,} rows claimed, the limit is {MAX_CURSOR_ITEMS:,}:"
                " does the claim query mark the rows it returns?",
            )
            return
        try:
            self.need(names_in_whole(self.playbook, step.name, "cursor"))
            policy = plain(render(dict(spec.frame), self.context()))
            frame = cursor_frame(policy)
            names = {"__frame_max_rows": frame.max_rows, "__frame_policy": policy}
            tool = cursor_claim(render(dict(spec.cursor), self.context(**names)))
        except (TemplateError, TypeError, ValueError) as exc:
            self.fail_step(step.name, f"cursor loop: {exc}")
            return
        loop.cap = frame.row_concurrency
        number = loop.frames
        loop.frames += 1
        command_id = command_prefix(self.state.execution_id, step.name, st.runs)
        command_id += f"/claim{number}"
        ref = CommandRef(step.name, st.runs, frame=number)
        self.issue_command(ref, command_id, tool, {}, None, frame=number)

    def frame_claimed(self, name: str, result: Any) -> None:
        """A claim finished: no rows drains the loop (`loop.done`); else its rows (one item
        each, or one item holding them all with `frame.process: frame`) are dispatched."""
        step = self.playbook.step(name)
        st = self.step_state(name)
        loop = st.loop
        assert loop is not None and step.loop is not None
        rows = claimed_rows(result)
        if rows is None:
            self.fail_step(name, f"cursor loop: the claim returned no rows field: {result!r:.200}")
            return
        if not rows:
            loop.rows = []  # drained: the state keeps no rows
            self.finish_loop(name, st)
            return
        whole = str(step.loop.frame.get("process", "row")) == "frame"
        items = [rows] if whole else rows
        loop.base, loop.rows = loop.count, items
        loop.count += len(items)
        self.dispatch_iterations(step, st)

    def max_in_flight(self, step: Step) -> int | None:
        """The loop's cap; a template is rendered against the current context (None: the
        step has failed because it did not give a positive integer)."""
        assert step.loop is not None
        cap: Any = step.loop.max_in_flight
        if isinstance(cap, str):
            try:
                self.need(names_in_whole(self.playbook, step.name, "cap"))
                cap = render(cap, self.context())
                cap = int(cap)
            except (TemplateError, TypeError, ValueError) as exc:
                self.fail_step(step.name, f"loop max_in_flight: {exc}")
                return None
            if cap < 1:
                self.fail_step(step.name, f"loop max_in_flight: {cap} is not a positive integer")
                return None
            if cap > MAX_IN_FLIGHT:
                self.fail_step(
                    step.name, f"loop max_in_flight: {cap} is over the limit of {MAX_IN_FLIGHT}"
                )
                return None
        return int(cap)

    def issue(self, step: Step, run: int, iteration: int | None = None) -> None:
        st = self.step_state(step.name)
        extra: dict[str, Any] = {}
        names = names_read(self.playbook, step.name)
        self.need(names_read_whole(self.playbook, step.name))
        if st.came_from and self.has_no_result_name():
            if "result" in names:
                self.need({st.came_from})
            extra["result"] = self.result_of(st.came_from)  # the upstream's result
        item: Any = None
        if iteration is not None:
            loop = self.step_state(step.name).loop
            assert loop is not None and step.loop is not None
            item = self.item(step.name, run, loop, iteration)
            scope = {step.loop.iterator: item, "_index": iteration}
            if loop.cursor:  # upstream's names: the frame's number and, for a whole frame, rows
                scope["_frame_index"] = loop.frames - 1
                if step.loop.frame.get("process") == "frame":
                    scope[f"{step.loop.iterator}_rows"] = item
            extra |= {step.loop.iterator: item, "iter": scope, "loop_index": iteration}
        command_id = command_prefix(self.state.execution_id, step.name, run)
        command_id += f"[{iteration}]" if iteration is not None else ""
        key = rerun.command_key(step.name, run, iteration)
        if self.state.reuse and self.reuse(command_id, key, step.name, run, iteration, item):
            return
        try:
            names = names_read(self.playbook, step.name)
            by_reference = any(_stored(self.state.results.get(name)) for name in names)
            on_worker = runs_on_worker(step) or by_reference
            if on_worker or "keychain" in names or "token" in names:  # secrets: worker only
                tool, tool_input = self.pipeline(step, self.context(**extra))
            else:
                ctx = self.context(**extra)
                resolved, config = semantics.resolve(self.playbook, step.tool)
                fields, tool_input = semantics.render_tool(config, step.input, ctx)
                tool = {"kind": resolved.kind, **fields}
            if step.output:  # select / store of the step's result: applied by the worker
                tool = {**tool, "output": plain(dict(step.output))}
        except TemplateError as exc:
            self.fail_step(step.name, f"template error: {exc}")
            return
        ref = CommandRef(step.name, run, iteration)
        self.issue_command(ref, command_id, tool, tool_input, iteration)

    def issue_command(
        self,
        ref: CommandRef,
        command_id: str,
        tool: dict[str, Any],
        tool_input: dict[str, Any],
        iteration: int | None,
        **extra: Any,
    ) -> None:
        """Record a command: its `command.issued` event and its row."""
        self.state.commands[command_id] = ref
        event_id = self.new_id()
        execution_id = self.state.execution_id
        payload = {"tool": tool, "input": tool_input, "iteration": iteration, **extra}
        self.events.append(
            EventRecord(
                execution_id,
                event_id,
                EventType.COMMAND_ISSUED,
                ref.step,
                command_id,
                payload=payload,
            )
        )
        self.commands.append(
            CommandRecord(execution_id, event_id, command_id, ref.step, tool, tool_input, iteration)
        )

    def reuse(
        self, command_id: str, key: str, step: str, run: int, iteration: int | None, item: Any
    ) -> bool:
        """A re-run's recorded outcome stands in for this command: no command is issued, and
        the outcome is applied once the current event is (`complete_reused`)."""
        entry = self.state.reuse.get(key)
        if entry is None or not rerun.reusable(entry, iteration, item):
            return False
        if not self._reuse_owned:  # copy on first write: states share the map
            self.state.reuse, self._reuse_owned = dict(self.state.reuse), True
        del self.state.reuse[key]
        self.state.commands[command_id] = CommandRef(step, run, iteration)
        self.emit(
            EventType.COMMAND_REUSED,
            step=step,
            command_id=command_id,
            status="COMPLETED",
            result=entry.get("result"),
            payload={"iteration": iteration, "run": run},
        )
        self.reused.append((command_id, entry))
        return True

    def complete_reused(self) -> None:
        while self.reused and self.running:
            command_id, entry = self.reused.popleft()
            self.command_completed(command_id, entry.get("result"), entry.get("variables") or {})

    def pipeline(self, step: Step, ctx: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A command the worker renders item by item: policies and `set` run between items.

        It carries the raw items and only the part of the context their templates read.
        """
        items = []
        for index, raw in enumerate(step.tools):
            tool, config = semantics.resolve(self.playbook, raw)
            items.append(
                {
                    "label": raw.name or f"item{index}",
                    "kind": tool.kind,
                    "config": config,
                    "set": dict(raw.set),
                    "policy": [dict(rule) for rule in raw.policy or tool.policy],
                }
            )
        names = names_read(self.playbook, step.name)
        context = {name: ctx[name] for name in names if name in ctx}
        variables = self.state.variables
        written = {
            name: variables[name]
            for name in semantics.assigned_names(step.tools)
            if name in variables
        }
        keychain = (
            {str(e["name"]): plain(dict(e)) for e in self.playbook.keychain}
            if ("keychain" in names)
            else {}
        )
        command: dict[str, Any] = {"kind": "pipeline", "items": plain(items)}
        if reads_item_results(self.playbook, step.name):
            command["results"] = True  # the result also carries each item's data by label
        return (
            command,
            {
                "step": plain(dict(step.input)),
                "context": plain(context),
                "variables": plain(written),  # current values of what its `set` blocks write
                "keychain": keychain,
            },
        )

    # -- outcomes -----------------------------------------------------------------------

    def command_completed(
        self,
        command_id: str,
        result: Any,
        variables: Mapping[str, Any],
        problems: Sequence[str] = (),
    ) -> None:
        ref = self.state.commands.pop(command_id, None)
        if ref is None:  # unknown or already settled: a duplicate changes nothing
            return
        if problems:
            self.problems.setdefault(ref.step, []).extend(problems)
        if variables:
            self.state.variables = {**self.state.variables, **variables}
        st = self.step_state(ref.step)
        if ref.frame is not None:
            self.frame_claimed(ref.step, result)
            return
        if ref.iteration is None:
            self.complete_step(ref.step, result, semantics.CALL_DONE)
            return
        loop = st.loop
        assert loop is not None
        loop.in_flight -= 1
        loop.succeeded += 1
        self.fresh.setdefault((ref.step, ref.run), {})[ref.iteration] = result
        if loop.failing is not None:
            if not loop.in_flight:
                self.fail_step(ref.step, loop.failing, loop.failing_fields)
            return
        self.dispatch_iterations(self.playbook.step(ref.step), st)

    def command_failed(self, command_id: str, error: str, fields: Mapping[str, Any]) -> None:
        ref = self.state.commands.pop(command_id, None)
        if ref is None:
            return
        st = self.step_state(ref.step)
        loop = st.loop
        if loop is not None and ref.iteration is not None:
            loop.in_flight -= 1
            loop.failed += 1
            if loop.failing is not None:  # the first failure is the one routed
                error, fields = loop.failing, loop.failing_fields or {}
            else:
                error = f"iteration {ref.iteration}: {error}"
            if loop.in_flight and self.may_route_failure(self.playbook.step(ref.step)):
                # routed once the iterations in flight have finished
                loop.failing, loop.failing_fields = error, dict(fields) or None
                return
        if ref.frame is not None:
            error = f"cursor claim (frame {ref.frame}): {error}"
        self.fail_step(ref.step, error, fields)

    def complete_step(self, name: str, result: Any, event_name: str) -> None:
        step = self.playbook.step(name)
        st = self.step_state(name)
        st.status = COMPLETED
        self.state.results[name] = result
        item_set = {} if runs_on_worker(step) else step.tool.set
        whole = names_in_whole(self.playbook, name, "completion")
        own = names_in(self.playbook, name, "completion") & {"output", "result"}
        self.need(whole | {name} if own else whole)
        kind = None if step.loop or len(step.tools) > 1 else step.tool.kind
        output = semantics.succeeded(self.result_of(name), kind)
        extra: dict[str, Any] = {"output": output, "event": {"name": event_name}}
        if self.has_no_result_name():
            extra["result"] = self.result_of(name)  # in `set` and arcs: the step's own result
        ctx = self.context(**extra)
        try:
            problems = [*self.problems.pop(name, ()), *self.apply_set(item_set, ctx)]
            problems += self.apply_set(step.set, ctx)
            taken: list[Arc] = []  # every `when` first, then the fired arcs' `set` (DSL §3)
            for arc in step.next.arcs if step.next else ():
                ok, problem = semantics.fires(arc.when, ctx)
                if problem:
                    problems.append(f"arc to {arc.step}: {problem}")
                if ok:
                    taken.append(arc)
                    if step.next and step.next.mode == "exclusive":
                        break
            for arc in taken:
                problems += self.apply_set(arc.set, ctx)
            fired = [arc.step for arc in taken]
        except TemplateLimitError as exc:  # a template bomb fails the step
            self.fail_step(name, str(exc))
            return
        payload = {"next": fired, **({"problems": problems} if problems else {})}
        if not fired and step.next and step.next.arcs and step.next.on_no_match == "fail":
            self.emit(
                EventType.STEP_EXIT, step=name, status=COMPLETED, result=result, payload=payload
            )
            self.finish(
                ExecutionStatus.FAILED,
                error=f"step '{name}': no arc matched (next.spec.on_no_match: fail)",
            )
            return
        self.emit(EventType.STEP_EXIT, step=name, status=COMPLETED, result=result, payload=payload)
        if not fired:
            self.state.last_step = name
        self.route(name, fired)

    def route(self, name: str, fired: list[str]) -> None:
        back = back_edges(self.playbook)
        looping = any((name, target) in back for target in fired)
        for target in dict.fromkeys(self.playbook.step(name).targets):
            if not self.running:
                return
            if target in fired:
                self.step_state(target).came_from = name
                if (name, target) in back:
                    self.enter(target)
                else:
                    self.step_state(target).arrived.append(name)
                    self.check_barrier(target)
            elif not looping and (name, target) not in back:
                self.step_state(target).dead.append(name)
                self.check_barrier(target)

    def check_barrier(self, name: str) -> None:
        st = self.step_state(name)
        upstreams = forward_upstreams(self.playbook)[name]
        if not upstreams <= {*st.arrived, *st.dead}:
            return
        if st.arrived:
            self.enter(name)
        else:
            st.status, st.arrived, st.dead = SKIPPED, [], []
            self.emit(EventType.STEP_SKIPPED, step=name, status=SKIPPED)
            self.route(name, [])

    def fail_step(self, name: str, error: str, fields: Mapping[str, Any] | None = None) -> None:
        """A failed step fails the execution, unless one of its arcs routes the failure: an
        arc whose `when` reads the outcome (`event`, `output`) and holds with
        `event.name == 'call.error'` and `output.status == 'error'` (upstream's convention);
        `output.error` holds the `fields` the worker reported (status, kind, retryable).
        A loop step with iterations still in flight is not routed (it fails; an iteration's
        failure waits for them when an arc could route it: `command_failed`). The template
        problems met on the way are recorded in its `step.exit`, as for a completed step, so
        the author can see why a failure arc did not fire."""
        st = self.step_state(name)
        st.status = FAILED
        step = self.playbook.step(name)
        fired: list[str] = []
        problems = list(self.problems.pop(name, ()))
        if not (st.loop and st.loop.in_flight):
            fired = self.failure_arcs(step, error, problems, fields)
        payload: dict[str, Any] = {"next": fired, "handled": True} if fired else {}
        if problems:
            payload["problems"] = problems
        self.emit(
            EventType.STEP_EXIT, step=name, status=FAILED, error=error, payload=payload or None
        )
        if fired:
            self.route(name, fired)
            return
        self.finish(ExecutionStatus.FAILED, error=f"step '{name}' failed: {error}")

    @staticmethod
    def may_route_failure(step: Step) -> bool:
        """Whether an arc of `step` reads the outcome, so could route its failure."""
        arcs = step.next.arcs if step.next else ()
        return any(arc.when is not None and reads_outcome(arc.when) for arc in arcs)

    def failure_arcs(
        self, step: Step, error: str, problems: list[str], fields: Mapping[str, Any] | None
    ) -> list[str]:
        """The arcs that route the failure; the template problems met go into `problems`."""
        self.need(names_in_whole(self.playbook, step.name, "arcs"))
        output = semantics.failed(error, fields=fields)
        ctx = self.context(output=output, event={"name": semantics.CALL_ERROR})
        fired: list[str] = []
        for arc in step.next.arcs if step.next else ():
            if arc.when is None or not reads_outcome(arc.when):
                continue
            ok, problem = semantics.fires(arc.when, ctx)
            if problem:
                problems.append(f"arc to {arc.step}: {problem}")
            if ok:
                failed_set = self.apply_set(arc.set, ctx)
                problems += failed_set
                if not failed_set:
                    fired.append(arc.step)
                if step.next and step.next.mode == "exclusive":
                    break
        return fired

    def finish(self, status: ExecutionStatus, *, error: str | None = None) -> None:
        state = self.state
        state.status = status
        state.error = error
        self.cancelled.extend(state.commands)
        for command_id, ref in state.commands.items():
            self.emit(
                EventType.COMMAND_CANCELLED,
                step=ref.step,
                command_id=command_id,
                status="CANCELLED",
                error=error,
            )
        state.commands.clear()
        event_type = {
            ExecutionStatus.COMPLETED: EventType.PLAYBOOK_COMPLETED,
            ExecutionStatus.FAILED: EventType.PLAYBOOK_FAILED,
            ExecutionStatus.CANCELLED: EventType.PLAYBOOK_CANCELLED,
        }[status]
        self.emit(event_type, status=status.value, result=state.result, error=error)

    def maybe_complete(self) -> None:
        if self.running and not self.state.commands:
            last = self.state.last_step
            if last:
                self.need({last})
            self.state.result = self.result_of(last) if last else None
            self.finish(ExecutionStatus.COMPLETED)


def reads_outcome(when: str) -> bool:
    """Does an arc's guard look at the step's outcome (so it may route a failure)?"""
    return bool(referenced_names(when) & {"event", "output"})


def _stored(result: Any) -> bool:
    """A result that travelled by reference (a stub with `_ref`): templates reading it are
    rendered on the worker, which loads the stored value first."""
    ref = result.get("_ref") if isinstance(result, Mapping) else None
    return isinstance(ref, Mapping) and ref.get("kind") == "result_ref"
