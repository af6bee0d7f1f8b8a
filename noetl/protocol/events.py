"""Event types and statuses: the names that appear in `noetl.event` and the API, each
defined once here."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    PLAYBOOK_INITIALIZED = "playbook.initialized"
    PLAYBOOK_COMPLETED = "playbook.completed"
    PLAYBOOK_FAILED = "playbook.failed"
    PLAYBOOK_CANCELLED = "playbook.cancelled"
    STEP_ENTER = "step.enter"
    STEP_EXIT = "step.exit"
    STEP_SKIPPED = "step.skipped"
    COMMAND_ISSUED = "command.issued"
    COMMAND_CLAIMED = "command.claimed"
    COMMAND_COMPLETED = "command.completed"
    COMMAND_FAILED = "command.failed"
    COMMAND_CANCELLED = "command.cancelled"
    COMMAND_REUSED = "command.reused"  # a re-run took the original execution's result
    COMMAND_RETRYING = "command.retrying"  # a policy retry, told by the worker as it happens


class ExecutionStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self is not ExecutionStatus.RUNNING


class StepStatus(StrEnum):
    """A step's status in the execution state and in its `step.exit` / `step.skipped` event.

    Lower case, unlike execution and command statuses: the API, the CLI and the web UI show
    and match these words as they are (changing the spelling is a breaking API change)."""

    WAITING = "waiting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


class CommandStatus(StrEnum):
    PENDING = "PENDING"
    CLAIMED = "CLAIMED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in {CommandStatus.COMPLETED, CommandStatus.FAILED, CommandStatus.CANCELLED}
