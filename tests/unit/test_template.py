"""Templates: native types for single expressions, strict undefined names, sandboxing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from noetl.dsl import bounds, template
from noetl.dsl.template import evaluate_condition, render, render_lenient, truthy
from noetl.errors import TemplateError


def test_a_single_expression_keeps_its_native_type() -> None:
    ctx = {"items": [1, 2], "n": 3, "d": {"a": None}}
    assert render("{{ items }}", ctx) == [1, 2]
    assert render("{{ n + 1 }}", ctx) == 4
    assert render("{{ d.a }}", ctx) is None
    assert render("n is {{ n }}", ctx) == "n is 3"


def test_rendering_walks_dicts_and_lists() -> None:
    assert render({"a": ["{{ x }}", {"b": "{{ x * 2 }}"}]}, {"x": 2}) == {"a": [2, {"b": 4}]}


def test_an_undefined_name_is_an_error_naming_it() -> None:
    with pytest.raises(TemplateError, match="missing"):
        render("{{ missing }}", {})
    with pytest.raises(TemplateError, match="missing"):
        render("value: {{ missing.x }}", {})


def test_default_filter_covers_undefined_names() -> None:
    assert render("{{ ctx.x | default(5) }}", {"ctx": {}}) == 5


def test_data_is_transparent_in_lookups() -> None:
    ctx = {"start": {"echo": "hi"}, "out": {"status": "ok", "data": {"id": 7}}}
    assert render("{{ start.echo }}", ctx) == "hi"
    assert render("{{ start.data.echo }}", ctx) == "hi"
    assert render("{{ start['data']['echo'] }}", ctx) == "hi"
    assert render("{{ out.id }}", ctx) == 7
    assert render("{{ out.data.id }}", ctx) == 7
    assert render("{{ out.status }}", ctx) == "ok"
    with pytest.raises(TemplateError, match="missing"):
        render("{{ out.missing }}", ctx)


def test_the_sandbox_blocks_python_internals() -> None:
    with pytest.raises(TemplateError):
        render("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})


def test_custom_filters() -> None:
    ctx = {"v": {"a": 1}}
    assert render("{{ v | tojson }}", ctx) == '{"a": 1}'
    assert render("{{ '{\"a\": 1}' | fromjson }}", {}) == {"a": 1}
    assert render("{{ 'hi' | b64encode | b64decode }}", {}) == "hi"


@pytest.mark.parametrize(
    "value",
    ["", "false", "False", "0", "no", "None", "null", "off", "[]", "{}", False, 0, None, [], {}],
)
def test_falsy_condition_values(value: object) -> None:
    assert truthy(value) is False


def test_conditions_with_undefined_names_are_false_with_a_reason() -> None:
    ok, problem = evaluate_condition("{{ nope > 1 }}", {})
    assert ok is False and problem is not None and "nope" in problem
    assert evaluate_condition(None, {}) == (True, None)


@pytest.mark.parametrize("key", ["items", "keys", "values", "get", "update", "pop", "copy"])
def test_a_mapping_key_wins_over_the_dict_method_of_the_same_name(key: str) -> None:
    """Regression (issue 9): `{{ start.items }}` gave the builtin dict method."""
    ctx = {"start": {key: [1, 2, 3]}}
    assert render("{{ start." + key + " }}", ctx) == [1, 2, 3]
    assert render("{{ start." + key + " | length }}", ctx) == 3
    assert render("{{ start.data." + key + " }}", ctx) == [1, 2, 3]


def test_dict_methods_still_work_on_mappings_without_such_keys() -> None:
    assert render("{{ d.items() | list }}", {"d": {"a": 1}}) == [("a", 1)]


def test_names_read_beyond_leaves_out_names_read_only_through_the_given_fields() -> None:
    from noetl.dsl.template import names_read_beyond

    fields = frozenset({"count", "failed"})
    assert names_read_beyond("{{ a.count + a['failed'] }} {{ x }}", fields) == {"x"}
    assert names_read_beyond("{{ a.count }} {{ a.results | length }}", fields) == {"a"}
    assert names_read_beyond("{{ a | tojson }}", fields) == {"a"}
    assert names_read_beyond("{{ a.data.count }}", fields) == {"a"}  # `data`: not a field
    assert names_read_beyond("{% for a in xs %}{{ a }}{% endfor %}", fields) == {"xs"}
    assert names_read_beyond("{{ broken", fields) == frozenset()


def test_attributes_read_lists_name_field_pairs_by_dot_and_by_subscript() -> None:
    from noetl.dsl.template import attributes_read

    text = "{{ a.results.x }} {{ b['results'] }} {{ c[0] }} {% if d.e %}{% endif %}"
    assert attributes_read(text) == {("a", "results"), ("b", "results"), ("d", "e")}
    assert attributes_read("{{ broken") == frozenset()


def test_now_is_the_current_utc_time_timezone_aware() -> None:
    from datetime import UTC, datetime, timedelta

    before = datetime.now(UTC)
    value = render("{{ now() }}", {})
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
    assert before <= moment <= datetime.now(UTC)
    assert render("{{ now('%Y') }}", {}) == str(moment.year)


def test_now_reads_a_fixed_clock_and_is_bounded() -> None:
    from noetl.dsl.template import clock

    with clock("2026-11-30T16:00:00+00:00"):
        assert render("{{ now() }}", {}) == "2026-11-30T16:00:00+00:00"
        assert render("at {{ now('%H:%M') }}", {}) == "at 16:00"
        with pytest.raises(TemplateError, match="format"):
            render("{{ now('%Y' * 500) }}", {})
    with clock(""), pytest.raises(TemplateError, match="no start time"):
        render("{{ now() }}", {})


# -- the lookup of a plain path (`{{ step.field }}`) without Jinja -----------------------------

_KEYS = st.sampled_from(
    ["a", "b", "data", "items", "get", "keys", "i", "self", "true", "_x", "range", "len", "dict"]
)
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
_VALUES = st.recursive(
    _LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=12,
)


def _outcome(source: str, context: dict[str, Any]) -> tuple[str, Any]:
    try:
        value = render(source, context)
    except TemplateError as exc:
        return "error", str(exc)
    if callable(value) or type(value).__module__.startswith("jinja2"):
        return "object", repr(type(value))  # a dict method, a global, Jinja's `self`
    return "value", value


@settings(max_examples=300, deadline=None)
@given(
    context=st.dictionaries(_KEYS, _VALUES, max_size=4),
    path=st.lists(_KEYS, min_size=1, max_size=4),
    spaces=st.sampled_from(["", " ", "  "]),
)
def test_a_plain_path_renders_as_jinja_renders_it(
    context: dict[str, Any], path: list[str], spaces: str
) -> None:
    source = "{{" + spaces + ".".join(path) + spaces + "}}"
    fast = _outcome(source, context)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(template, "_lookup", lambda path, context: template._MISSING)
        slow = _outcome(source, context)
    assert fast == slow


def test_a_plain_path_is_read_by_jinja_s_parser() -> None:
    assert template._compile("{{ s49.i }}")[2] == ("s49", "i")
    assert template._compile("{{a.b.c}}")[2] == ("a", "b", "c")
    for source in [
        "{{ true }}",
        "{{ none }}",
        "{{ a['b'] }}",
        "{{ a.b | length }}",
        "{{ f() }}",
        "{{ a.0 }}",
        "x {{ a }}",
        "{{ a + b }}",
        "{{ self.a }}",
        "{{ range.a }}",
    ]:
        assert template._compile(source)[2] is None, source


def test_a_plain_path_over_the_bounds_is_refused() -> None:
    with pytest.raises(bounds.TemplateLimitError):
        render("{{ big.text }}", {"big": {"text": "x" * (bounds.MAX_TEXT + 1)}})


@pytest.mark.parametrize(
    "source",
    [
        "{{ [[0] * 99999] * 99999 }}",  # small in memory (one list, shared), 10**10 in JSON
        "x {{ [[0] * 99999] * 99999 }}",
        "{{ {'a': [range(99999) | list] * 99999} }}",
    ],
)
def test_a_value_enormous_when_printed_is_refused(source: str) -> None:
    with pytest.raises(bounds.TemplateLimitError, match="characters and items"):
        render(source, {})


@pytest.mark.parametrize(
    "source",
    [  # each took minutes within the budget: reading an item cost 1/256 of an operation
        "{% for i in range(1000) %}{{ range(99999) | list | sort | length }}{% endfor %}",
        "{% set x = range(99999) | list %}"
        "{% for i in range(1000) %}{{ x | sort | last }}{% endfor %}",
        "{% set x = range(99999) | list %}{% for i in range(20000) %}{{ -1 in x }}{% endfor %}",
        "{% set x = range(99999) | list %}{% set y = range(99999) | list %}"
        "{% for i in range(20000) %}{{ x == y }}{% endfor %}",
    ],
)
def test_reading_long_collections_over_and_over_runs_out_of_budget(source: str) -> None:
    with pytest.raises(bounds.TemplateLimitError, match="operations"):
        render(source, {})


def test_measure_counts_shared_references_and_stops_past_its_limit() -> None:
    inner = list(range(1000))
    assert bounds.measure([inner, inner, "abc"]) == (3, 1 + 1001 + 1001 + 1)
    chars, items = bounds.measure([inner] * 10**6, limit=50_000)
    assert 50_000 < chars + items < 52_000
    assert bounds.measure({"k": ["v", 1.5, None]}) == (2, 6)


def test_comparisons_and_reads_of_ordinary_data_stay_within_the_budget() -> None:
    rows = [{"id": i, "name": f"n{i}"} for i in range(10_000)]
    assert render("{{ rows | length > 5 and rows[0].id == 0 }}", {"rows": rows}) is True
    assert render("{{ 9999 in rows | map(attribute='id') | list }}", {"rows": rows}) is True
    assert len(render("{{ rows }}", {"rows": rows})) == 10_000


@pytest.mark.parametrize(
    "source",
    [
        "{{ 1e308 * 10 }}",
        "{{ x | float }}",
        "{{ -(x | float) }}",
        "{{ y | float }}",
        "{{ [1, x | float] }}",
        "{{ {'a': [x | float]} }}",
    ],
)
def test_a_value_that_is_not_a_json_number_is_a_template_error(source: str) -> None:
    """JSON has no inf or nan: such a value became null silently once written (a tool's
    input, a `set` variable), a wrong answer where an error was due."""
    with pytest.raises(TemplateError, match="not a finite number"):
        render(source, {"x": "inf", "y": "nan"})
    with pytest.raises(TemplateError, match="not a finite number"):
        render_lenient(source, {"x": "inf", "y": "nan"})


def test_a_non_finite_number_inside_a_computation_or_text_is_fine() -> None:
    context = {"x": "inf", "y": "nan"}
    assert render("{{ (x | float) > 1 }}", context) is True
    assert render("{{ (y | float) != (y | float) }}", context) is True  # the NaN test idiom
    assert render("at {{ x | float }}", context) == "at inf"
    assert render("{{ 1.5 * 2 }}", context) == 3.0


def test_a_single_expression_with_braces_inside_keeps_its_native_type() -> None:
    """`{{ {'a': {'b': 1}} }}` gave the text "{'a': {'b': 1}}": the closing braces of the
    inner mapping looked like the end of the expression."""
    assert render("{{ {'a': {'b': n}} }}", {"n": 1}) == {"a": {"b": 1}}
    assert render_lenient("{{ {'a': {'b': n}} }}", {"n": 1}) == {"a": {"b": 1}}
    assert render("{{ [{'a': {'b': 1}}] }}", {}) == [{"a": {"b": 1}}]
    assert render("{{ '{{' }}", {}) == "{{"
    assert render("{{ '}}' }}", {}) == "}}"
    assert render("{{ a }}{{ b }}", {"a": 1, "b": 2}) == "12"  # two expressions are text
    assert render("{{ a }} }}", {"a": 1}) == "1 }}"
