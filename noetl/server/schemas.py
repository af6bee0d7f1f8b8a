"""Request bodies of the HTTP API. Ids are accepted as JSON integers or strings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo

from noetl import jsonfast


def _to_int(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


Id = Annotated[int, BeforeValidator(_to_int)]


def _portable(value: Any, info: ValidationInfo) -> Any:
    """The codec rule (noetl.jsonfast): a 422 naming the field for a number no component
    could read back."""
    jsonfast.check(value, info.field_name or "body")
    return value


Portable = Annotated[Any, AfterValidator(_portable)]
PortableObject = Annotated[dict[str, Any], AfterValidator(_portable)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(Body):
    content: str = Field(description="The playbook YAML text")


class ExecuteRequest(Body):
    path: str | None = None
    catalog_id: Id | None = None
    playbook: str | None = Field(default=None, description="Inline playbook YAML")
    version: int | None = None
    payload: PortableObject = Field(default_factory=dict)
    parent_execution_id: Id | None = None
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=1e9,
        description="Time limit: still running after it, the execution is cancelled",
    )


class ChildRequest(Body):
    """A sub-playbook a worker starts for the command it holds (a pipeline's `kind: playbook`
    item): the catalog entry and the child's payload."""

    path: str | None = None
    catalog_id: Id | None = None
    version: int | None = None
    payload: PortableObject = Field(default_factory=dict)


class RerunRequest(Body):
    """Re-run an ended execution: from its failed steps (the default) or from a named step."""

    from_failed: bool | None = Field(default=None, description="Restart at the failed steps")
    from_step: str | None = Field(default=None, min_length=1, description="Restart at this step")
    payload: PortableObject = Field(
        default_factory=dict, description="Merged over the original execution's workload"
    )
    version: int | Literal["latest"] | None = Field(
        default=None, description="Catalog version (default: the original's)"
    )


class ClaimRequest(Body):
    worker_id: str = Field(min_length=1, max_length=200)


class LeaseRequest(Body):
    attempt: int = Field(ge=1)


class RetryingRequest(Body):
    """A policy retry of a running attempt, told by its worker as it happens."""

    attempt: int = Field(ge=1)
    worker_id: str = Field(min_length=1, max_length=200)
    item: str = Field(max_length=200)
    try_: int = Field(alias="try", ge=2)
    attempts: int = Field(ge=1)
    delay: float = Field(ge=0)
    error: str = Field(max_length=2000)


class ErrorFields(Body):
    """`output.error` of a failed call beyond its message (DSL §6): what the arcs the server
    fires on `call.error` read, as the step's policy rules read it on the worker."""

    retryable: bool = False
    kind: str = Field(default="error", max_length=64)
    status: int | None = Field(default=None, ge=0, le=999, description="an HTTP status")


class EventRequest(Body):
    """A worker's event: `command.claimed`, `command.completed` or `command.failed`."""

    execution_id: Id
    event_type: Literal["command.claimed", "command.completed", "command.failed"]
    event_id: Id | None = Field(default=None, description="Id of the command.issued event")
    command_id: str | None = None
    attempt: int | None = Field(default=None, ge=1)
    worker_id: str = Field(min_length=1, max_length=200)
    result: Portable = None
    error: str | None = None
    duration: float | None = None
    variables: PortableObject | None = Field(
        default=None, description="Execution variables set by pipeline items on the worker"
    )
    takes_next: bool = Field(
        default=True, description="The worker may be handed the next command in the answer"
    )
    problems: list[Annotated[str, Field(max_length=10_000)]] | None = Field(
        default=None,
        max_length=1000,
        description="Template problems in `set` / `when` met on the worker (recorded, not fatal)",
    )
    log: dict[Literal["stdout", "stderr"], str] | None = Field(
        default=None, description="What the tools printed (the last 64 KiB of each stream)"
    )
    masked: bool = Field(
        default=False, description="The worker replaced a secret value by *** in the outcome"
    )
    error_fields: ErrorFields | None = Field(
        default=None, description="command.failed: `output.error` beyond the message"
    )


class ClaimManyRequest(Body):
    worker_id: str = Field(min_length=1, max_length=200)
    event_ids: list[Id] = Field(min_length=1, max_length=1000)


class EventBatchRequest(Body):
    events: list[EventRequest] = Field(min_length=1, max_length=1000)


class CancelRequest(Body):
    reason: str = "cancelled by request"


class WorkerHeartbeat(Body):
    worker_id: str = Field(min_length=1, max_length=200)
    hostname: str = ""
    concurrency: int = Field(default=1, ge=1, le=1_000_000)
    status: Literal["ready", "stopping", "stopped"] = "ready"
    running: int = Field(default=0, ge=0, le=1_000_000)
    # the event ids of the commands it holds; None: it does not list them (an older worker)
    commands: list[int] | None = Field(default=None, max_length=1_000_000)
