"""Embedded PostgreSQL and NATS JetStream for local runs and tests."""

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
