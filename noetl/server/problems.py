"""The one table from the error tree to HTTP status codes, and the JSON body of an error."""

from __future__ import annotations

from typing import Any

from noetl.errors import (
    ConflictError,
    ForbiddenError,
    NoetlError,
    NotFoundError,
    PayloadTooLargeError,
    PlaybookError,
    RequestError,
    TemplateError,
)

STATUS_OF: dict[type[NoetlError], int] = {
    ForbiddenError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    PayloadTooLargeError: 413,
    PlaybookError: 422,
    RequestError: 422,
    TemplateError: 422,
}


def status_of(exc: BaseException) -> int:
    return next((code for kind, code in STATUS_OF.items() if isinstance(exc, kind)), 500)


def body_of(exc: BaseException) -> dict[str, Any]:
    body: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, PlaybookError):
        body["problems"] = [problem.as_dict() for problem in exc.problems]
    return body
