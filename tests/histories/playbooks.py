"""The playbooks whose recorded runs are kept in tests/histories/*.json."""

from __future__ import annotations

HEAD = "apiVersion: noetl.io/v2\nkind: Playbook\n"

PLAYBOOKS: dict[str, str] = {
    "loop": HEAD
    + """metadata: {name: loop, path: histories/loop}
workload: {items: [3, 1, 2]}
workflow:
  - step: start
    loop: {in: "{{ items }}", iterator: n, spec: {mode: parallel, max_in_flight: 2}}
    tool: {kind: python, input: {n: "{{ n }}"}, code: "result = n * 10"}
    next: [end]
  - step: end
    tool: {kind: python, input: {total: "{{ start.results | sum }}"}, code: "result = total"}
""",
    "fan_in": HEAD
    + """metadata: {name: fan_in, path: histories/fan_in}
workload: {hot: true}
workflow:
  - step: start
    tool: {kind: noop, result: {ok: true}}
    next:
      spec: {mode: inclusive}
      arcs: [{step: left}, {step: right, when: "{{ hot }}"}, {step: never, when: "{{ not hot }}"}]
  - step: left
    tool: {kind: noop, result: 1}
    set: {ctx.left: "{{ output.data }}"}
    next: [join]
  - step: right
    tool: {kind: noop, result: 2}
    next: [join]
  - step: never
    tool: {kind: noop}
    next: [join]
  - step: join
    tool: {kind: python, input: {a: "{{ ctx.left }}", b: "{{ right }}"}, code: "result = a + b"}
""",
    "retry": HEAD
    + """metadata: {name: retry, path: histories/retry}
workload: {}
workflow:
  - step: start
    tool: {kind: noop, result: started}
    set: {ctx.tries: 0}
    next: [attempt]
  - step: attempt
    tool:
      kind: python
      input: {tries: "{{ ctx.tries }}"}
      code: "result = {'ok': tries >= 2}"
    set: {ctx.tries: "{{ ctx.tries + 1 }}"}
    next:
      arcs:
        - {step: attempt, when: "{{ not attempt.ok }}"}
        - {step: end}
  - step: end
    tool: {kind: noop, result: {tries: "{{ ctx.tries }}"}}
""",
    "child": HEAD
    + """metadata: {name: child, path: histories/child}
workload: {n: 1}
workflow:
  - step: start
    tool: {kind: python, input: {n: "{{ n }}"}, code: "result = {'doubled': n * 2}"}
""",
    "parent": HEAD
    + """metadata: {name: parent, path: histories/parent}
workload: {}
workflow:
  - step: start
    tool: {kind: playbook, path: histories/child, input: {n: 21}}
    next: [end]
  - step: end
    tool: {kind: noop, result: {child: "{{ start.doubled }}"}}
""",
    "failure": HEAD
    + """metadata: {name: failure, path: histories/failure}
workload: {}
workflow:
  - step: start
    tool: {kind: noop, result: 1}
    next: [boom]
  - step: boom
    tool: {kind: python, code: "raise ValueError('the recorded failure')"}
    next: [never]
  - step: never
    tool: {kind: noop}
""",
}

RECORDED = ["loop", "fan_in", "retry", "parent", "failure"]  # child runs inside parent
