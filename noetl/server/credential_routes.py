"""`/api/credentials`: named secrets. Data is encrypted at rest and returned only on request
(`?include_data=true`). Scopes when tokens are configured (docs/security.md):

- the API token manages credentials (list, create, delete, read metadata) and never reads
  decrypted data, unless no worker token is configured (then it is the workers' token too);
- the worker token reads the data of a credential for a command it holds
  (`&command=<event_id>` of a CLAIMED command with a live lease, `&worker=<id>` the worker
  holding it) that names that credential, and nothing else here.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field

from noetl.credential_names import credentials_named
from noetl.errors import ForbiddenError, NotFoundError
from noetl.secrets import Cipher
from noetl.server.schemas import Body, PortableObject
from noetl.server.service import Orchestrator
from noetl.store import commands, credentials

router = APIRouter()
NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")  # a credential's name
NAME_MAX = 200


class CredentialRequest(Body):
    name: str = Field(min_length=1, max_length=NAME_MAX, pattern=NAME.pattern)
    type: str = Field(min_length=1, max_length=50, description="postgres, http, bearer, ...")
    data: PortableObject = Field(description="The secret fields, e.g. host/user/password")
    description: str = ""
    tags: list[str] = Field(default_factory=list)


def _parts(request: Request) -> tuple[Orchestrator, Cipher]:
    return request.app.state.orchestrator, request.app.state.cipher


def _scope(request: Request) -> str:
    return str(getattr(request.state, "token_scope", "open"))


def _managing(request: Request) -> None:
    if _scope(request) == "worker":
        raise ForbiddenError("the worker token cannot list, create, read or delete credentials")


async def _may_read_data(
    request: Request, name: str, command: str | None, worker: str | None
) -> None:
    """Decrypted data: the open API, the API token when it is the only token, or the worker
    token for a command held with a live lease (by `worker`, when the request names it) that
    names this credential (`credential_names.credentials_named`: its tools' auth, the keychain
    entries its templates read, token() calls). Any other credential stays unreadable, so a worker
    token reads at most what the commands it holds need."""
    scope = _scope(request)
    orchestrator, _ = _parts(request)
    if scope == "open" or (scope == "api" and not orchestrator.settings.worker_token):
        return
    if scope == "api":
        raise ForbiddenError(
            "credential data is for workers only (NOETL_WORKER_TOKEN); the API token reads"
            " names and metadata"
        )
    if command is None or not command.isdigit():
        raise ForbiddenError(f"credential {name!r}: name the command it is for (&command=)")
    async with orchestrator.pool.connection() as conn:
        row = await commands.get_by_event(conn, int(command))
    if row is None or row["status"] != "CLAIMED" or row["lease_expired"]:
        raise ForbiddenError(f"credential {name!r}: command {command} is not held by a worker")
    if worker is not None and worker != row["worker_id"]:
        raise ForbiddenError(f"credential {name!r}: command {command} is held by another worker")
    if name not in credentials_named(row["tool"] or {}, row["input"] or {}):
        raise ForbiddenError(
            f"credential {name!r}: command {command} (step {row['step']}) does not use it"
        )


def _view(row: dict[str, Any]) -> dict[str, Any]:
    view = {k: row[k] for k in ("name", "type", "description", "tags")}
    for key in ("created_at", "updated_at"):
        value: datetime = row[key]
        view[key] = value.isoformat()
    return view


@router.post("/api/credentials", status_code=201)
async def put_credential(request: Request, body: CredentialRequest) -> dict[str, Any]:
    _managing(request)
    orchestrator, cipher = _parts(request)
    async with orchestrator.pool.connection() as conn:
        row = await credentials.upsert(
            conn, body.name, body.type, cipher.encrypt(body.data), body.description, body.tags
        )
    return _view(row)


@router.get("/api/credentials")
async def list_credentials(request: Request) -> dict[str, Any]:
    _managing(request)
    orchestrator, _ = _parts(request)
    async with orchestrator.pool.connection() as conn:
        rows = await credentials.list_all(conn)
    return {"items": [_view(row) for row in rows]}


def _existing(name: str) -> None:
    """A name no credential can have (a NUL, a slash, 500 characters) names none: 404."""
    if len(name) > NAME_MAX or not NAME.fullmatch(name):
        raise NotFoundError(f"credential {name!r} does not exist")


@router.get("/api/credentials/{name}")
async def get_credential(
    request: Request,
    name: str,
    include_data: Annotated[bool, Query()] = False,
    command: Annotated[str | None, Query(description="event id of the command it is for")] = None,
    worker: Annotated[str | None, Query(description="id of the worker holding it")] = None,
) -> dict[str, Any]:
    if include_data:
        await _may_read_data(request, name, command, worker)
    else:
        _managing(request)
    orchestrator, cipher = _parts(request)
    _existing(name)
    async with orchestrator.pool.connection() as conn:
        row = await credentials.get(conn, name)
    if row is None:
        raise NotFoundError(f"credential {name!r} does not exist")
    view = _view(row)
    if include_data:
        view["data"] = cipher.decrypt(bytes(row["data"]))
    return view


@router.delete("/api/credentials/{name}")
async def delete_credential(request: Request, name: str) -> dict[str, Any]:
    _managing(request)
    orchestrator, _ = _parts(request)
    _existing(name)
    async with orchestrator.pool.connection() as conn:
        deleted = await credentials.delete(conn, name)
    if not deleted:
        raise NotFoundError(f"credential {name!r} does not exist")
    return {"name": name, "deleted": True}
