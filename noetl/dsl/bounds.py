"""Bounds on one template render: what it may produce and how much work it may do.

A template is code from a playbook fed with data from a payload; neither may exhaust the
server or a worker. Every string a template produces is at most `MAX_TEXT` characters, every
list, range or mapping at most `MAX_ITEMS` items, every integer at most `MAX_INT_BITS` bits,
a rendered value at most `MAX_INPUT` characters and items when printed (counted through shared
references), and one render at most `MAX_OPERATIONS` operations (loop iterations, calls,
filters, operators, comparisons and outputs, each weighted by what it reads). The limits are
checked BEFORE an operation builds its result where the size can be known in advance
(`'a' * n`, `range(n)`, `join`, `center(n)`, `indent(n)`, `replace`, format widths), otherwise
right after.

The budget counts operations, not seconds, so a render is deterministic (the engine replays
decisions). An item read costs `1/_ITEM_UNIT` operation and a character `1/_WEIGHT_UNIT`, near
their CPU cost next to a loop iteration's, so the budget bounds one render to a few seconds on
a slow machine (sorting a 100,000-item list 1,000 times ran for minutes when an item cost what
a character does).
Exceeding a bound raises `TemplateLimitError`, which fails the step or the execution with the
reason.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from noetl.errors import TemplateError

MAX_TEXT = 4 * 1024 * 1024  # characters of one string (the default result size limit)
MAX_ITEMS = 100_000  # items of one list, range, set or mapping
MAX_INT_BITS = 65_536  # bits of one integer (2**65536 is computed in microseconds)
MAX_OPERATIONS = 2_000_000  # weighted operations of one render
MAX_INPUT = 4 * MAX_TEXT  # what one operation may read, counted through shared references
_WEIGHT_UNIT = 256  # characters that cost one operation
_ITEM_UNIT = 8  # items (of a list, a mapping, ...) that cost one operation
_WIDTH = re.compile(r"\d+")


class TemplateLimitError(TemplateError):
    """A template exceeded one of the bounds of this module."""


class Budget:
    __slots__ = ("left",)

    def __init__(self, operations: int = MAX_OPERATIONS) -> None:
        self.left = operations

    def spend(self, operations: int = 1) -> None:
        self.left -= operations
        if self.left < 0:
            raise TemplateLimitError(
                f"the template did more than {MAX_OPERATIONS:,} operations (a runaway loop?)"
            )


_BUDGET: ContextVar[Budget | None] = ContextVar("noetl_template_budget", default=None)


@contextlib.contextmanager
def budget() -> Iterator[Budget]:
    """One budget per top-level render; nested renders share it."""
    current = _BUDGET.get()
    if current is not None:
        yield current
        return
    fresh = Budget()
    token = _BUDGET.set(fresh)
    try:
        yield fresh
    finally:
        _BUDGET.reset(token)


def spend(operations: int = 1) -> None:
    current = _BUDGET.get()
    if current is not None:
        current.spend(operations)


def _too_big(what: str, size: int, limit: int) -> TemplateLimitError:
    """`what` names the thing and its unit: "a string of {} characters"."""
    return TemplateLimitError(
        f"the template would build {what.format(f'{size:,}')}; the limit is {limit:,}"
    )


_SCALARS = frozenset({int, float, bool, type(None)})
_CONTAINERS = (list, tuple, set, frozenset)


def measure(value: Any, limit: int = MAX_TEXT) -> tuple[int, int]:
    """(characters, items) in `value`, counted through shared references (a list holding the
    same list 99,999 times counts it 99,999 times: that is what printing it builds), stopping
    once past `limit` in all. A container met again is counted from memory, so this costs at
    most the distinct items it holds, and at most `limit` steps."""
    memo: dict[int, tuple[int, int]] = {}

    def walk(item: Any, budget: int, depth: int) -> tuple[int, int]:
        if isinstance(item, str | bytes):
            return len(item), 1
        if isinstance(item, range):
            return 0, len(item)
        if isinstance(item, dict | Mapping):
            children: Iterable[Any] = [*item.keys(), *item.values()]
        elif isinstance(item, _CONTAINERS):
            children = item
        else:
            return 0, 1
        key = id(item)
        if key in memo:
            return memo[key]
        chars, items = 0, 1
        for child in children:
            if type(child) in _SCALARS:
                items += 1
                continue
            if depth > 500:  # deeper than any template builds: count it as big
                return budget + 1, 0
            more_chars, more_items = walk(child, budget - chars - items, depth + 1)
            chars += more_chars
            items += more_items
            if chars + items > budget:
                return chars, items  # not remembered: it was not counted in full
        memo[key] = (chars, items)
        return chars, items

    return walk(value, limit, 0)


def weight(value: Any, limit: int = MAX_TEXT) -> int:
    """Characters and items in `value` (see `measure`): what printing or joining it builds."""
    chars, items = measure(value, limit)
    return chars + items


def _cost(chars: int, items: int) -> int:
    """Operations to charge for reading `chars` characters and `items` items: a character is
    copied in C, an item is a Python object each operation visits."""
    return 1 + chars // _WEIGHT_UNIT + items // _ITEM_UNIT


def check_result(value: Any) -> Any:
    """Refuse a value over the bounds; charge the budget for its size."""
    if isinstance(value, str | bytes):
        if len(value) > MAX_TEXT:
            raise _too_big("a string of {} characters", len(value), MAX_TEXT)
        spend(1 + len(value) // _WEIGHT_UNIT)
    elif isinstance(value, list | tuple | dict | set | frozenset | range):
        if len(value) > MAX_ITEMS:
            raise _too_big("a collection of {} items", len(value), MAX_ITEMS)
        spend(_cost(0, len(value)))
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise _too_big("an integer of {} bits", value.bit_length(), MAX_INT_BITS)
        spend()
    else:
        spend()
    return value


def check_inputs(args: Iterable[Any]) -> None:
    """Charge for what an operation reads; refuse inputs that could only build a bomb."""
    for arg in args:
        if type(arg) in _SCALARS:
            spend()
            continue
        chars, items = measure(arg, MAX_INPUT)
        if chars + items > MAX_INPUT:
            raise _too_big("an input of {} characters and items", chars + items, MAX_INPUT)
        spend(_cost(chars, items))


def read(value: Any) -> Any:
    """An operand of a comparison (`==`, `in`, `<`, ...), charged for what comparing it
    reads (`-1 in a_long_list` walks the whole list)."""
    if type(value) not in _SCALARS:
        check_inputs([value])
    return value


def check_output(value: Any) -> Any:
    """A render's value, refused when printing or storing it would build more than
    `MAX_INPUT` characters and items (a list holding the same long list 99,999 times is
    small in memory and enormous in JSON)."""
    check_result(value)
    if isinstance(value, dict | list | tuple | set | frozenset):
        size = weight(value, MAX_INPUT)
        if size > MAX_INPUT:
            raise _too_big("a value of {} characters and items", size, MAX_INPUT)
    return value


def bounded_range(*args: int) -> range:
    """`range` with at most `MAX_ITEMS` items."""
    steps = range(*args)
    if len(steps) > MAX_ITEMS:
        raise _too_big("a range of {} items", len(steps), MAX_ITEMS)
    spend()
    return steps


def steps(iterable: Any) -> Iterator[Any]:
    """What a `{% for %}` iterates, one operation per item."""
    current = _BUDGET.get()
    for item in iterable:
        if current is not None:
            current.spend()
        yield item


def concat(parts: Iterable[Any]) -> str:
    """The `~` operator with the size known before joining."""
    texts = [str(part) for part in parts]
    size = sum(len(text) for text in texts)
    if size > MAX_TEXT:
        raise _too_big("a string of {} characters", size, MAX_TEXT)
    spend(1 + size // _WEIGHT_UNIT)
    return "".join(texts)


def _repeat(seq: Any, times: int) -> None:
    if isinstance(seq, str | bytes):
        limit, what = MAX_TEXT, "a string of {} characters"
    elif isinstance(seq, list | tuple):
        limit, what = MAX_ITEMS, "a list of {} items"
    else:
        return
    size = len(seq) * max(times, 0)
    if size > limit:
        raise _too_big(what, size, limit)


def _format_widths(fmt: Any, extra: int = 0) -> None:
    """Widths and precisions in a format string (`%999999d`, `{:>999999}`) allocate: bound
    their sum before formatting."""
    if isinstance(fmt, str):
        size = len(fmt) + extra + sum(int(d) for d in _WIDTH.findall(fmt) if len(d) < 12)
        if any(len(d) >= 12 for d in _WIDTH.findall(fmt)) or size > MAX_TEXT:
            raise _too_big("a formatted string of {} characters", size, MAX_TEXT)


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and not isinstance(right, int):
        left, right = right, left
    if not isinstance(right, int) or isinstance(right, bool):
        return
    if isinstance(left, int):
        bits = left.bit_length() + right.bit_length()
        if bits > MAX_INT_BITS:
            raise _too_big("an integer of {} bits", bits, MAX_INT_BITS)
    else:
        _repeat(left, right)


def _check_sum(left: Any, right: Any) -> None:
    if isinstance(left, str | bytes) and isinstance(right, str | bytes):
        limit, what = MAX_TEXT, "a string of {} characters"
    elif isinstance(left, list | tuple) and isinstance(right, list | tuple):
        limit, what = MAX_ITEMS, "a list of {} items"
    else:
        return
    if len(left) + len(right) > limit:
        raise _too_big(what, len(left) + len(right), limit)


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Before `left <operator> right` runs: refuse when its result would be over a bound."""
    spend()
    if operator == "*":
        _check_product(left, right)
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            bits = left.bit_length() * right
            if bits > MAX_INT_BITS:
                raise _too_big("an integer of {} bits", bits, MAX_INT_BITS)
    elif operator == "+":
        _check_sum(left, right)
    elif operator == "%":
        _format_widths(left, weight(right))


_WIDTH_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})


def check_call(function: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Before a method, global or filter call: inputs within bounds, and the known
    multiplying operations (padding, indent, replace, join, format) within bounds."""
    owner = getattr(function, "__self__", None)
    name = getattr(function, "__name__", "")
    inputs = [*args, *kwargs.values()]
    check_inputs([owner, *inputs] if isinstance(owner, str | bytes | list | tuple) else inputs)
    if isinstance(owner, str):
        _check_text_method(owner, name, args, kwargs)


def _check_text_method(
    text: str, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> None:
    if name in _WIDTH_METHODS and args and isinstance(args[0], int) and args[0] > MAX_TEXT:
        raise _too_big("a padded string of {} characters", args[0], MAX_TEXT)
    if name == "expandtabs":
        size = len(text) + text.count("\t") * int((args or [8])[0])
        if size > MAX_TEXT:
            raise _too_big("a string of {} characters", size, MAX_TEXT)
    if name == "replace" and len(args) >= 2:
        replaced(text, args[0], args[1])
    if name == "join" and args:
        joined(args[0], text)
    if name in {"format", "format_map"}:
        _format_widths(text, weight([args, dict(kwargs)]))


def replaced(text: Any, old: Any, new: Any) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        count = text.count(old) if old else len(text) + 1
        size = len(text) + count * max(len(new) - len(old), 0)
        if size > MAX_TEXT:
            raise _too_big("a string of {} characters", size, MAX_TEXT)


def joined(items: Any, separator: Any = "") -> None:
    if isinstance(items, list | tuple):
        size = weight(items) + len(str(separator)) * len(items)
        if size > MAX_TEXT:
            raise _too_big("a string of {} characters", size, MAX_TEXT)


def indented(text: Any, width: Any = 4) -> None:
    if isinstance(text, str):
        pad = width if isinstance(width, int) else len(str(width))
        size = len(text) + (text.count("\n") + 1) * max(pad, 0)
        if size > MAX_TEXT:
            raise _too_big("an indented string of {} characters", size, MAX_TEXT)


def guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that checks its inputs and result against the bounds."""

    passes_internal = hasattr(function, "jinja_pass_arg")  # context or environment first

    def run(*args: Any, **kwargs: Any) -> Any:
        values = list(args[1:] if passes_internal else args)
        check_inputs([*values, *kwargs.values()])
        if name == "join" and values:
            joined(values[0], values[1] if len(values) > 1 else kwargs.get("d", ""))
        elif name == "indent" and values:
            indented(values[0], values[1] if len(values) > 1 else kwargs.get("width", 4))
        elif name == "replace" and len(values) >= 3:
            replaced(values[0], values[1], values[2])
        elif name == "center" and len(values) > 1 and isinstance(values[1], int):
            if values[1] > MAX_TEXT:
                raise _too_big("a padded string of {} characters", values[1], MAX_TEXT)
        elif name == "format" and values:
            _format_widths(values[0], weight(values[1:]))
        return check_result(function(*args, **kwargs))

    run.__name__ = getattr(function, "__name__", name)
    run.__doc__ = function.__doc__
    run.__dict__.update(getattr(function, "__dict__", {}))  # jinja_pass_arg (context, env)
    return run
