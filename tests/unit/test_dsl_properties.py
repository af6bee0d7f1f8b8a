"""Whatever YAML arrives, the parser answers with a playbook or a PlaybookError, nothing else."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from noetl.dsl import parse_playbook
from noetl.errors import PlaybookError

KEYS = [
    "apiVersion",
    "kind",
    "metadata",
    "workflow",
    "step",
    "tool",
    "next",
    "arcs",
    "spec",
    "mode",
    "loop",
    "in",
    "iterator",
    "when",
    "set",
    "name",
    "path",
    "kind",
    "code",
    "input",
    "workbook",
    "keychain",
    "policy",
    "rules",
    "then",
    "do",
    "credential",
    "x",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(
        [
            "python",
            "noop",
            "start",
            "end",
            "{{ x }}",
            "{{ oops(",
            "noetl.io/v2",
            "Playbook",
            "exclusive",
            "inclusive",
            "parallel",
            "retry",
            "",
        ]
    ),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)


def _parse(text: str) -> None:
    """A playbook, or a PlaybookError listing at least one readable problem."""
    try:
        parse_playbook(text)
    except PlaybookError as exc:
        problems = exc.problems
    else:
        return
    assert problems
    assert all(str(problem) for problem in problems)


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(values)
def test_arbitrary_documents_never_crash_the_parser(document: Any) -> None:
    _parse(yaml.safe_dump(document))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes_the_parser(text: str) -> None:
    _parse(text)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "step": st.sampled_from(["start", "a", "b", "end"]),
                "tool": st.fixed_dictionaries({"kind": st.sampled_from(["noop", "python"])}),
            },
            optional={"next": values, "loop": values, "set": values, "input": values},
        ),
        min_size=1,
        max_size=4,
    )
)
def test_arbitrary_workflows_never_crash_the_parser(workflow: list[dict[str, Any]]) -> None:
    document = {
        "apiVersion": "noetl.io/v2",
        "kind": "Playbook",
        "metadata": {"name": "p"},
        "workflow": workflow,
    }
    _parse(yaml.safe_dump(document))
