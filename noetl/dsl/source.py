"""YAML text → plain Python data, remembering where every value came from.

PyYAML composes a node tree that carries marks; we construct the values ourselves so that
each path (`("workflow", 3, "next", "arcs", 0, "step")`) maps to its line and column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import yaml

from noetl.documents import MAX_DOCUMENT_BYTES
from noetl.errors import PlaybookError, Problem

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


@dataclass
class Located:
    """Parsed YAML plus the (line, column) of every mapping key and value, 1-based."""

    data: Any
    file: str | None = None
    marks: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path) -> tuple[int | None, int | None]:
        while path:
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return self.marks.get((), (None, None))

    def problem(self, path: Path, message: str) -> Problem:
        line, column = self.where(path)
        return Problem(message, format_path(path), line, column, self.file)


MAX_VALUES = 200_000  # values after expanding aliases (a billion-laughs document)
MAX_DEPTH = 100  # nesting levels


class _TooLarge(Exception):
    """The document breaks a bound: reported as a PlaybookError at the node's line."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """Refuses a document nested deeper than `MAX_DEPTH` while composing it: the composer
    recurses per level, so a deep document would otherwise be read whole (seconds for a few
    thousand levels) before `_construct` could count its depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH + 1:  # the root is level 0, as in `_construct`
                raise _TooLarge(
                    f"the document nests deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str, file: str | None = None) -> Located:
    """Parse one YAML document; syntax errors become a `PlaybookError` with the line.

    Bounded: at most `MAX_DOCUMENT_BYTES`, `MAX_VALUES` values once aliases and merge keys are
    expanded, and `MAX_DEPTH` levels, so a hostile document costs little time and memory."""
    located = Located(None, file)
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_DOCUMENT_BYTES:
        raise PlaybookError(
            [Problem(f"the document is {size} bytes; the limit is {MAX_DOCUMENT_BYTES}", "")]
        )
    loader: yaml.SafeLoader | None = None
    try:
        loader = _BoundedLoader(text)
        node = loader.get_single_node()
        if node is not None:
            located.data = _construct(loader, node, (), located, [MAX_VALUES], {})
    except _TooLarge as exc:
        line = exc.mark.line + 1 if exc.mark else None
        column = exc.mark.column + 1 if exc.mark else None
        raise PlaybookError([Problem(str(exc), "", line, column, file)]) from None
    except RecursionError:
        raise PlaybookError(
            [Problem(f"the document nests deeper than {MAX_DEPTH} levels", "", None, None, file)]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        message = f"invalid YAML: {exc.problem or exc.context}"
        if exc.context and exc.problem and exc.context_mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise PlaybookError([Problem(message, "", line, column, file)]) from None
    except yaml.YAMLError as exc:
        raise PlaybookError([Problem(f"invalid YAML: {exc}", "", None, None, file)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return located


def _merged_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Pairs of a mapping once its `<<` merge keys are flattened (memoised: linear)."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_VALUES + 1  # a cycle of merges counts as too many
    total = 0
    for key_node, value_node in node.value:
        if key_node.tag != "tag:yaml.org,2002:merge":
            total += 1
        elif isinstance(value_node, yaml.MappingNode):
            total += _merged_size(value_node, sizes)
        elif isinstance(value_node, yaml.SequenceNode):
            total += sum(
                _merged_size(item, sizes)
                for item in value_node.value
                if isinstance(item, yaml.MappingNode)
            )
        if total > MAX_VALUES:
            break
    sizes[id(node)] = total
    return total


def _construct(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: Path,
    located: Located,
    left: list[int],
    sizes: dict[int, int],
) -> Any:
    left[0] -= 1
    if left[0] < 0:
        raise _TooLarge(
            f"the document expands to more than {MAX_VALUES} values (YAML aliases?)",
            node.start_mark,
        )
    if len(path) > MAX_DEPTH:
        raise _TooLarge(f"the document nests deeper than {MAX_DEPTH} levels", node.start_mark)
    located.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        if _merged_size(node, sizes) > MAX_VALUES:
            raise _TooLarge(
                f"the document expands to more than {MAX_VALUES} values (YAML aliases?)",
                node.start_mark,
            )
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be scalars", key_node.start_mark
                )
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be scalars", key_node.start_mark
                )
            key = str(key) if not isinstance(key, str) else key
            child = (*path, key)
            if key in result:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            located.marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _construct(loader, value_node, child, located, left, sizes)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, (*path, index), located, left, sizes)
            for index, item in enumerate(node.value)
        ]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, date):  # keep data JSON-native: timestamps stay text
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value
