"""Rows the engine decides and the store writes: an event to append, a command to issue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from noetl.protocol.events import EventType


@dataclass(frozen=True)
class EventRecord:
    """One row of `noetl.event`."""

    execution_id: int
    event_id: int
    event_type: EventType
    step: str | None = None
    command_id: str | None = None
    attempt: int | None = None
    worker_id: str | None = None
    status: str | None = None
    payload: Any = None
    result: Any = None
    error: str | None = None
    parent_event_id: int | None = None
    parent_execution_id: int | None = None
    duration: float | None = None


@dataclass(frozen=True)
class CommandRecord:
    """One row of `noetl.command`: a unit of work for a worker, issued PENDING."""

    execution_id: int
    event_id: int  # the id of its `command.issued` event: what NATS carries
    command_id: str
    step: str
    tool: Mapping[str, Any]  # {"kind": ..., **rendered fields}
    input: Mapping[str, Any]
    iteration: int | None = None
