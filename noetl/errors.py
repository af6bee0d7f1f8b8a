"""The one error tree of NoETL.

    NoetlError
    ├── ConfigError            a setting is missing or invalid (names the variable)
    ├── PlaybookError          a playbook cannot be parsed or validated (file, line, field)
    ├── TemplateError          a template failed to render (names the expression)
    ├── NotFoundError          an id or path does not exist                  → HTTP 404
    ├── ForbiddenError         the token is valid but its scope does not allow this → HTTP 403
    ├── ConflictError          claim lost, already terminal, stale attempt   → HTTP 409
    ├── RequestError           a request is malformed                        → HTTP 422
    └── PayloadTooLargeError   a request or result exceeds the size limit    → HTTP 413

(PlaybookError and TemplateError are 422 too.) HTTP handlers never build status codes
themselves: `noetl.server.problems.STATUS_OF` maps this tree to status codes in one table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class NoetlError(Exception):
    """Base of every error NoETL raises on purpose."""


class ConfigError(NoetlError):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Problem:
    """One validation problem, located in the source file."""

    message: str
    field: str = ""
    line: int | None = None
    column: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = self.file or "<playbook>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "message": self.message,
            "field": self.field,
            "line": self.line,
            "column": self.column,
            "file": self.file,
        }


class PlaybookError(NoetlError):
    """The playbook is invalid; carries every problem found, not only the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class TemplateError(NoetlError):
    pass


class NotFoundError(NoetlError):
    pass


class LoopDataMissing(NoetlError):
    """The event log lacks data a loop needs (e.g. its step.enter event has no items)."""


class ForbiddenError(NoetlError):
    pass


class ConflictError(NoetlError):
    pass


class RequestError(NoetlError):
    pass


class PayloadTooLargeError(NoetlError):
    pass
