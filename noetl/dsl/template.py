"""Sandboxed Jinja2 templates.

- A value that is exactly one `{{ expr }}` keeps its native type; anything else renders to text.
- An undefined name is falsy where it is only tested (`x or y`, `x if x else y`, `{% if x %}`,
  `not x`); any other use (rendered, iterated, compared, an attribute read) raises
  `TemplateError` naming it, except in conditions, where `evaluate_condition` reports it and
  the condition is false (DSL.md §2).
- Compiled templates are cached: a playbook's templates are compiled once per process.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from noetl.dsl import bounds, quoting
from noetl.errors import TemplateError

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.DOTALL)
_FALSE_WORDS = frozenset({"", "false", "0", "no", "none", "null", "off", "[]", "{}"})


def _tojson(value: Any) -> str:
    return json.dumps(value, default=str)


def _fromjson(value: str) -> Any:
    return json.loads(value)


def _b64encode(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return base64.b64encode(raw).decode()


def _b64decode(value: str) -> str:
    return base64.b64decode(value).decode()


# `now()`: None is the wall clock (the worker); the engine sets the execution's start time,
# or "" when it has none (its decisions are replayed, so it never reads a clock itself).
_CLOCK: ContextVar[str | None] = ContextVar("noetl_template_clock", default=None)
MAX_NOW_FORMAT = 200  # characters of a `now(format)` strftime format


@contextmanager
def clock(at: str) -> Iterator[None]:
    """Within the block `now()` is `at` (an ISO-8601 time; "" makes `now()` an error)."""
    token = _CLOCK.set(at)
    try:
        yield
    finally:
        _CLOCK.reset(token)


def _now(format: str | None = None) -> str:
    """The current time in UTC, timezone-aware: ISO-8601 (`2026-11-30T16:00:00.123456+00:00`),
    or formatted with a strftime `format`."""
    at = _CLOCK.get()
    if at == "":
        raise ValueError("now(): this execution has no start time to read")
    moment = datetime.now(UTC) if at is None else datetime.fromisoformat(at)
    if format is None:
        return moment.isoformat()
    if not isinstance(format, str) or len(format) > MAX_NOW_FORMAT:
        raise ValueError(f"now(format): a format is a string of at most {MAX_NOW_FORMAT} chars")
    return moment.strftime(format)


_MISSING = object()


def _through_data(obj: Any, name: Any) -> Any:
    """A mapping's own key first (`{{ start.items }}` is the key `items`, not the dict
    method). Then `.data` is transparent: a result without a `data` key is its own data, and
    a name a mapping lacks is looked up in its `data` (so `step.x`, `step.data.x`,
    `output.data.x` and an envelope's `x` all find the tool's field)."""
    if not isinstance(obj, Mapping) or not isinstance(name, str):
        return _MISSING
    if name in obj:  # a key wins over a dict method of the same name (`start.items`)
        return obj[name]
    if name == "data":
        return obj
    inner = obj.get("data")
    if isinstance(inner, Mapping) and name in inner:
        return inner[name]
    return _MISSING


def _charged(expr: nodes.Expr) -> nodes.Expr:
    if isinstance(expr, nodes.Const):  # nothing to charge
        return expr
    return nodes.Filter(expr, "noetl_read", [], [], None, None, lineno=expr.lineno)


class _Guard(NodeTransformer):
    """Rewrites a parsed template so its loops, `~` joins and comparisons go through `bounds`."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        loop = self.generic_visit(node)
        assert isinstance(loop, nodes.For)
        loop.iter = nodes.Filter(loop.iter, "noetl_steps", [], [], None, None, lineno=loop.lineno)
        return loop

    def visit_Compare(self, node: nodes.Compare) -> nodes.Node:
        compare = self.generic_visit(node)
        assert isinstance(compare, nodes.Compare)
        compare.expr = _charged(compare.expr)
        for operand in compare.ops:
            operand.expr = _charged(operand.expr)
        return compare

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        concat = self.generic_visit(node)
        assert isinstance(concat, nodes.Concat)
        items = nodes.List(concat.nodes, lineno=concat.lineno)
        return nodes.Filter(items, "noetl_concat", [], [], None, None, lineno=concat.lineno)


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, with every operator, call, filter, loop and join bounded (`bounds`)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        found = _through_data(obj, attribute)
        return super().getattr(obj, attribute) if found is _MISSING else found

    def getitem(self, obj: Any, argument: Any) -> Any:
        found = _through_data(obj, argument)
        return super().getitem(obj, argument) if found is _MISSING else found

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        bounds.check_binop(operator, left, right)
        return bounds.check_result(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        bounds.check_call(__obj, args, kwargs)
        return bounds.check_result(super().call(__context, __obj, *args, **kwargs))

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = _Guard().visit(super()._parse(source, name, filename))
        assert isinstance(tree, nodes.Template)
        return tree


class _Undefined(jinja2.StrictUndefined):
    """Strict, except that a truth test is false: a step that did not run on this path is
    undefined, and playbooks test for it (`a or b`, `{% if a %}`, DSL.md §2). Rendering,
    iterating, comparing it or reading an attribute of it still raises, naming it, so a
    typo in a tool's input fails the step instead of sending an empty value."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _MET_UNDEFINED.set(True)

    def __bool__(self) -> bool:  # type: ignore[override]  # the parent's raises (Never)
        return False


# Set when a render meets an undefined name: only then can one hide in what it built
_MET_UNDEFINED: ContextVar[bool] = ContextVar("noetl_template_met_undefined", default=False)


def _defined(value: Any) -> Any:
    """`value`, refused if an undefined is in it, within the lists and mappings a template
    built too (`{{ [a and 1] }}`): one there reaches the output, so it is used, not tested.
    Walked only in renders that met an undefined name, each container once. (The lenient
    environment's undefined is another class: it renders empty, as upstream's.)"""
    if isinstance(value, _Undefined):
        value._fail_with_undefined_error()
    if not _MET_UNDEFINED.get():
        return value
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Undefined):
            item._fail_with_undefined_error()
        if isinstance(item, Mapping | list | tuple | set | frozenset) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, Mapping) else item)
    return value


def _finalize(value: Any) -> Any:
    return bounds.check_output(_defined(value))


def _environment(
    undefined: type[jinja2.Undefined] = _Undefined,
) -> ImmutableSandboxedEnvironment:
    env = _Environment(undefined=undefined, autoescape=False, finalize=_finalize)
    env.filters.update(
        tojson=_tojson, fromjson=_fromjson, b64encode=_b64encode, b64decode=_b64decode
    )
    env.filters.update(quoting.FILTERS)
    env.filters = {
        name: bounds.guarded_filter(name, function) for name, function in env.filters.items()
    }
    env.filters.update(noetl_steps=bounds.steps, noetl_concat=bounds.concat, noetl_read=bounds.read)
    env.globals.clear()
    env.globals.update(range=bounds.bounded_range, dict=dict, list=list, len=len, now=_now)
    return env


_ENV = _environment()
_LENIENT = _environment(jinja2.ChainableUndefined)  # workload defaults, as upstream renders them


def is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


@lru_cache(maxsize=4096)
def _compile(source: str) -> tuple[bool, Any, tuple[str, ...] | None]:
    """(native, compiled, path): `path` is set when the whole template is one name with
    attributes (`{{ step.field.sub }}`), which `render_string` looks up without Jinja."""
    expression = _single(source)
    if expression is not None:
        compiled = _ENV.compile_expression(expression, undefined_to_none=False)
        return True, compiled, _path(expression)
    return False, _ENV.from_string(source), None


def _single(source: str) -> str | None:
    """The expression of a template that is exactly one `{{ expr }}` (its value keeps its
    type), else None. Braces inside it (`{{ {'a': {'b': 1}} }}`, `{{ '}}' }}`) are read as
    Jinja's lexer reads them, which balances them: two expressions are not one."""
    match = _SINGLE.match(source)
    if match is None:
        return None
    expression = match["expr"]
    if "{{" not in expression and "}}" not in expression:
        return expression
    try:
        body = _ENV.parse(source).body
    except jinja2.TemplateSyntaxError:
        return None
    output = body[0] if len(body) == 1 else None
    if not isinstance(output, nodes.Output) or len(output.nodes) != 1:
        return None
    return None if isinstance(output.nodes[0], nodes.TemplateData) else expression


def _path(expression: str) -> tuple[str, ...] | None:
    """`("step", "field")` for `step.field`, as Jinja's own parser reads the expression
    (`true`, `none`, a filter, an index or a call is not a path; nor is a name Jinja
    resolves itself: `self`, `range`, `now`, ...)."""
    try:
        body = _ENV.parse("{{" + expression + "}}").body
    except jinja2.TemplateSyntaxError:
        return None
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return None
    node = body[0].nodes[0]
    attributes: list[str] = []
    while isinstance(node, nodes.Getattr):
        attributes.append(node.attr)
        node = node.node
    if not isinstance(node, nodes.Name) or node.ctx != "load" or node.name in _SPECIAL:
        return None
    return (node.name, *reversed(attributes))


# names Jinja resolves itself whatever the context holds: the template (`self`), the globals
_SPECIAL = frozenset({"self", *_ENV.globals})


def _lookup(path: tuple[str, ...], context: Mapping[str, Any]) -> Any:
    """The value at `path` as Jinja would find it (`_Environment.getattr`), when every
    step of the way is a mapping's key (or its `data`'s); `_MISSING` when any is not (an
    undefined name, a method, an object's attribute): Jinja then renders it, and says why."""
    name, *attributes = path
    if name not in context:
        return _MISSING
    value = context[name]
    for attribute in attributes:
        value = _through_data(value, attribute)
        if value is _MISSING:
            return _MISSING
    return value


def referenced_names(source: str) -> frozenset[str]:
    """Top-level names a template reads (to send a worker only the context it needs)."""
    return _names(source)


@lru_cache(maxsize=4096)
def _names(source: str) -> frozenset[str]:
    try:
        return frozenset(meta.find_undeclared_variables(_ENV.parse(source)))
    except jinja2.TemplateSyntaxError:
        return frozenset()


def _read(source: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """The part of `context` a template reads. Jinja copies the whole context it is given
    into every render; an execution's context holds every step's result, so handing it
    only the names the template reads keeps a render's cost from growing with the steps
    run. The names are the template's undeclared ones (`referenced_names`, cached): a name
    it does not read cannot change what it renders."""
    return {name: context[name] for name in _names(source) if name in context}


def names_read_beyond(source: str, fields: frozenset[str]) -> frozenset[str]:
    """`referenced_names` less those the template reads only through one of `fields`
    (`name.field`, `name['field']`): a finished loop's `count` needs its summary, not its
    results."""
    return _whole(source, fields)


@lru_cache(maxsize=4096)
def _whole(source: str, fields: frozenset[str]) -> frozenset[str]:
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError:
        return frozenset()
    through: set[int] = set()  # the Name nodes read through a field
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.attr in fields:
            through.add(id(node.node))
    for item in tree.find_all(nodes.Getitem):
        key = item.arg.value if isinstance(item.arg, nodes.Const) else None
        if isinstance(item.node, nodes.Name) and key in fields:
            through.add(id(item.node))
    whole = {
        name.name
        for name in tree.find_all(nodes.Name)
        if name.ctx == "load" and id(name) not in through
    }
    return frozenset(whole) & frozenset(meta.find_undeclared_variables(tree))


def attributes_read(source: str) -> frozenset[tuple[str, str]]:
    """`(name, field)` for each `name.field` / `name['field']` a template reads."""
    return _attributes(source)


@lru_cache(maxsize=4096)
def _attributes(source: str) -> frozenset[tuple[str, str]]:
    try:
        tree = _ENV.parse(source)
    except jinja2.TemplateSyntaxError:
        return frozenset()
    found: set[tuple[str, str]] = set()
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name):
            found.add((node.node.name, node.attr))
    for item in tree.find_all(nodes.Getitem):
        key = item.arg.value if isinstance(item.arg, nodes.Const) else None
        if isinstance(item.node, nodes.Name) and isinstance(key, str):
            found.add((item.node.name, key))
    return frozenset(found)


def check_syntax(source: str) -> str | None:
    """The syntax error message of a template, or None when it compiles."""
    try:
        _compile(source)
    except jinja2.TemplateSyntaxError as exc:
        return f"template syntax error: {exc.message} in {source.strip()!r}"
    return None


def _shown(source: str) -> str:
    text = source.strip()
    return repr(text if len(text) <= 200 else text[:200] + "...")


def render_string(source: str, context: Mapping[str, Any]) -> Any:
    """Render one template within the bounds of `noetl.dsl.bounds`."""
    met = _MET_UNDEFINED.set(False)
    try:
        native, compiled, path = _compile(source)
        with bounds.budget():
            if path is not None:
                value = _lookup(path, context)
                if value is not _MISSING:
                    return bounds.check_result(value)
            if native:
                value = _defined(compiled(**_read(source, context)))
                return _finite(bounds.check_output(value))
            return _streamed(compiled.generate(**_read(source, context)))
    except bounds.TemplateLimitError as exc:
        raise bounds.TemplateLimitError(f"{exc} in {_shown(source)}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{exc.message} in {_shown(source)}") from None
    except (jinja2.TemplateError, _NotJSON) as exc:
        raise TemplateError(f"{exc} in {_shown(source)}") from None
    except Exception as exc:  # a filter or operator raised (e.g. 1/0, fromjson on text)
        raise TemplateError(f"{type(exc).__name__}: {exc} in {_shown(source)}") from None
    finally:
        _MET_UNDEFINED.reset(met)


class _NotJSON(ValueError):
    """A render's value JSON cannot hold."""


def _finite(value: Any) -> Any:
    """`value`, refused when it is or holds a float JSON cannot write (inf, nan): it became
    null silently once written (a tool's input, a variable). Containers are walked: a
    render's output is bounded (`bounds.check_output`), and most outputs are scalars."""
    if type(value) is float:
        if not math.isfinite(value):
            raise _NotJSON(f"the template gives {value!r}, not a finite number (JSON has no other)")
    elif isinstance(value, Mapping):
        for item in value.values():
            _finite(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _finite(item)
    return value


def _streamed(chunks: Any) -> str:
    """Join a render's output, refusing it once it grows past `bounds.MAX_TEXT`."""
    parts: list[str] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > bounds.MAX_TEXT:
            raise bounds.TemplateLimitError(
                f"the template would build a string of over {size:,} characters;"
                f" the limit is {bounds.MAX_TEXT:,}"
            )
        parts.append(chunk)
    return "".join(parts)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside `value` (dicts and lists recursively)."""
    if isinstance(value, str):
        return render_string(value, context) if is_template(value) else value
    if isinstance(value, Mapping):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render(item, context) for item in value]
    return value


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_WORDS
    return bool(value)


def evaluate_condition(source: Any, context: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(value, problem): an undefined name or a failing template makes the condition false."""
    if source is None:
        return True, None
    try:
        return truthy(render(source, context)), None
    except bounds.TemplateLimitError:
        raise  # a bomb fails its step; it is not a false condition
    except TemplateError as exc:
        return False, str(exc)


def plain(value: Any) -> Any:
    """Turn template results (ResultView, tuples, Undefined) into JSON-native data."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    if isinstance(value, jinja2.Undefined):
        return None
    return value


def render_lenient(value: Any, context: Mapping[str, Any]) -> Any:
    """Render like upstream NoETL renders workload defaults: an undefined name (or an
    attribute of one) is empty (None for a whole-value expression, "" inside text). Other
    template errors raise TemplateError."""
    if isinstance(value, Mapping):
        return {key: render_lenient(item, context) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_lenient(item, context) for item in value]
    if not is_template(value):
        return value
    source = str(value)
    try:
        single = _single(source)
        with bounds.budget():
            if single is not None:
                expression = _LENIENT.compile_expression(single, undefined_to_none=False)
                result = bounds.check_result(expression(**_read(source, context)))
                return None if isinstance(result, jinja2.Undefined) else _finite(plain(result))
            return _streamed(_LENIENT.from_string(source).generate(**_read(source, context)))
    except bounds.TemplateLimitError as exc:
        raise bounds.TemplateLimitError(f"{exc} in {_shown(source)}") from None
    except (jinja2.TemplateError, _NotJSON) as exc:
        raise TemplateError(f"{exc} in {source.strip()!r}") from None
    except Exception as exc:  # a filter or operator raised
        raise TemplateError(f"{type(exc).__name__}: {exc} in {source.strip()!r}") from None


def render_workload(
    defaults: Mapping[str, Any], payload: Mapping[str, Any], base: Mapping[str, Any]
) -> dict[str, Any]:
    """The workload an execution sees: the payload's keys as given; every other default
    rendered once, in document order, against `base` (execution_id, job, env), `payload` /
    `input` (the request payload), `workload` and the keys before it. A default never sees
    itself, so `x: "{{ x | default(1) }}"` is 1 unless the payload gives x."""
    done: dict[str, Any] = {}
    for key, value in defaults.items():
        if key in payload:
            continue
        scope = {**base, **done, **payload, "payload": payload, "input": payload}
        scope["workload"] = {**done, **payload}
        done[key] = render_lenient(value, scope)
    return {**done, **payload}
