"""Embedded PostgreSQL and NATS JetStream for local runs and tests.

The names below are loaded on first use: the `noetl` command imports
`noetl.embedded.server_process` before anything else, and this package with it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from noetl.embedded.services import (
        EmbeddedNats,
        EmbeddedPostgres,
        EmbeddedServices,
        find_nats_server,
        free_port,
    )

__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "EmbeddedServices",
    "find_nats_server",
    "free_port",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("noetl.embedded.services"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
