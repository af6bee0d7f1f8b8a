"""Playbooks the UI tests and the screenshots run."""

TOUR = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: tour, path: tests/ui/tour}
workload: {items: [1, 2, 3, 4, 5, 6]}
workflow:
  - step: start
    tool: {kind: noop}
    next:
      spec: {mode: inclusive}
      arcs:
        - step: square
        - step: count
        - step: audit
          when: "{{ items | length > 3 }}"
  - step: square
    loop:
      in: "{{ items }}"
      iterator: item
      spec: {mode: parallel, max_in_flight: 3}
    tool: {kind: python, input: {x: "{{ item }}"}, code: "result = x * x"}
    next: [join]
  - step: count
    tool: {kind: python, input: {items: "{{ items }}"}, code: "result = len(items)"}
    next: [join]
  - step: audit
    tool: {kind: python, code: "print('audited'); result = {'audited': True}"}
  - step: join
    tool:
      kind: python
      input: {squares: "{{ square.results }}", n: "{{ count }}"}
      code: "result = {'sum': sum(squares), 'n': n}"
"""

FAILING = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: failing, path: tests/ui/failing_100%_sure}
workflow:
  - step: start
    tool: {kind: python, code: "raise ValueError('boom from the step')"}
"""

# an arc whose `when` fails to render: false, and the step's template problem says why
UNFIRED = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: problems, path: tests/ui/problems}
workflow:
  - step: start
    tool: {kind: noop, result: 1}
    next:
      arcs:
        - {step: never, when: "{{ missing.status == 500 }}"}
        - {step: done}
  - {step: never, tool: {kind: noop}}
  - {step: done, tool: {kind: noop}}
"""
