"""The typed, immutable playbook model. Built only by `noetl.dsl.parse`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

Mode = Literal["exclusive", "inclusive"]
LoopMode = Literal["sequential", "parallel", "cursor"]


@dataclass(frozen=True)
class Arc:
    step: str
    when: str | None = None
    set: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Next:
    mode: Mode
    arcs: tuple[Arc, ...]
    on_no_match: Literal["quiet", "fail"] = "quiet"  # no arc fired: end the branch, or fail


@dataclass(frozen=True)
class Loop:
    collection: Any  # the `in:` value, usually a template (None for a cursor loop)
    iterator: str
    mode: LoopMode = "sequential"
    max_in_flight: int | str = 100  # a positive int, or a template rendered at loop start
    cursor: Mapping[str, Any] | None = None  # `loop.cursor`: kind, auth, claim (a cursor loop)
    frame: Mapping[str, Any] = field(default_factory=dict)  # `spec.frame` of a cursor loop


@dataclass(frozen=True)
class Tool:
    """One tool call: `kind` plus its own fields (rendered at dispatch)."""

    kind: str
    config: Mapping[str, Any]
    name: str | None = None  # label of a pipeline item
    set: Mapping[str, Any] = field(default_factory=dict)  # applied after a pipeline item
    policy: tuple[Mapping[str, Any], ...] = ()  # spec.policy.rules, first match wins


@dataclass(frozen=True)
class Step:
    name: str
    tools: tuple[Tool, ...]  # one tool, or a pipeline of labelled items
    pipeline: bool = False
    desc: str = ""
    input: Mapping[str, Any] = field(
        default_factory=dict
    )  # step-level input, merged under the tool's
    set: Mapping[str, Any] = field(default_factory=dict)
    next: Next | None = None
    loop: Loop | None = None
    admit: tuple[Mapping[str, Any], ...] = ()  # spec.policy.admit.rules: {when, allow}
    output: Mapping[str, Any] = field(default_factory=dict)  # select / store of the result

    @property
    def tool(self) -> Tool:
        return self.tools[0]

    @cached_property  # read per arc by graph walks: a step with 8,000 arcs made them quadratic
    def targets(self) -> tuple[str, ...]:
        return tuple(arc.step for arc in self.next.arcs) if self.next else ()


@dataclass(frozen=True, eq=False)  # identity: a parsed playbook is a value object we cache on
class Playbook:
    name: str
    path: str
    steps: Mapping[str, Step]  # in document order
    entry: str
    api_version: str = "noetl.io/v2"
    description: str = ""
    version: str | None = None
    workload: Mapping[str, Any] = field(default_factory=dict)
    keychain: tuple[Mapping[str, Any], ...] = ()
    workbook: Mapping[str, Tool] = field(default_factory=dict)
    spec: Mapping[str, Any] = field(default_factory=dict)  # root `spec`: rendered at start
    notes: tuple[str, ...] = ()  # accepted constructs with no effect here (`noetl validate`)
    max_step_runs: int | None = None  # executor.spec.max_step_runs; None: the server's setting

    def step(self, name: str) -> Step:
        return self.steps[name]
