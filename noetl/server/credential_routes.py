"""`/api/credentials`: named secrets. Data is encrypted at rest and only returned on request
(`?include_data=true`), which needs the API or worker token when tokens are configured."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import Field

from noetl.errors import NotFoundError
from noetl.secrets import Cipher
from noetl.server.schemas import Body
from noetl.server.service import Orchestrator
from noetl.store import credentials

router = APIRouter()


class CredentialRequest(Body):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")
    type: str = Field(min_length=1, max_length=50, description="postgres, http, bearer, ...")
    data: dict[str, Any] = Field(description="The secret fields, e.g. host/user/password")
    description: str = ""
    tags: list[str] = Field(default_factory=list)


def _parts(request: Request) -> tuple[Orchestrator, Cipher]:
    return request.app.state.orchestrator, request.app.state.cipher


def _view(row: dict[str, Any]) -> dict[str, Any]:
    view = {k: row[k] for k in ("name", "type", "description", "tags")}
    for key in ("created_at", "updated_at"):
        value: datetime = row[key]
        view[key] = value.isoformat()
    return view


@router.post("/api/credentials", status_code=201)
async def put_credential(request: Request, body: CredentialRequest) -> dict[str, Any]:
    orchestrator, cipher = _parts(request)
    async with orchestrator.pool.connection() as conn:
        row = await credentials.upsert(
            conn, body.name, body.type, cipher.encrypt(body.data), body.description, body.tags
        )
    return _view(row)


@router.get("/api/credentials")
async def list_credentials(request: Request) -> dict[str, Any]:
    orchestrator, _ = _parts(request)
    async with orchestrator.pool.connection() as conn:
        rows = await credentials.list_all(conn)
    return {"items": [_view(row) for row in rows]}


@router.get("/api/credentials/{name}")
async def get_credential(
    request: Request, name: str, include_data: Annotated[bool, Query()] = False
) -> dict[str, Any]:
    orchestrator, cipher = _parts(request)
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
    orchestrator, _ = _parts(request)
    async with orchestrator.pool.connection() as conn:
        deleted = await credentials.delete(conn, name)
    if not deleted:
        raise NotFoundError(f"credential {name!r} does not exist")
    return {"name": name, "deleted": True}
