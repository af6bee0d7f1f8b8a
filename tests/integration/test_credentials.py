"""Credentials: encrypted at rest, resolved by the worker, never leaked; bearer tokens."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from noetl.config import Settings
from noetl.embedded.runtime import running
from tests.conftest import event_log, run_playbook


def _credential(name: str, settings: Settings, secret: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "postgres",
        "data": {"dsn": settings.require_database_url(), "password": secret, "note": secret},
        "description": "test database",
        "tags": ["test"],
    }


async def test_credentials_are_stored_encrypted_and_listed_without_data(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    secret = f"planted-{uuid.uuid4().hex}"
    created = await api.post("/api/credentials", json=_credential("pg_test", settings, secret))
    assert created.status_code == 201
    assert "data" not in created.json()
    listed = (await api.get("/api/credentials")).json()["items"]
    assert [(c["name"], c["type"], c["tags"]) for c in listed] == [
        ("pg_test", "postgres", ["test"])
    ]
    assert secret not in json.dumps(listed)
    plain = (await api.get("/api/credentials/pg_test")).json()
    assert "data" not in plain
    full = (await api.get("/api/credentials/pg_test", params={"include_data": "true"})).json()
    assert full["data"]["password"] == secret
    with psycopg.connect(settings.require_database_url()) as conn:
        row = conn.execute("SELECT data FROM noetl.credential WHERE name = 'pg_test'").fetchone()
    assert row is not None and secret.encode() not in bytes(row[0])
    assert (await api.delete("/api/credentials/pg_test")).status_code == 200
    assert (await api.get("/api/credentials/pg_test")).status_code == 404
    assert (await api.delete("/api/credentials/pg_test")).status_code == 404
    for odd in ("%00", "a%20b", "x" * 300):  # names no credential can have: 404, not 422
        assert (await api.get(f"/api/credentials/{odd}")).status_code == 404, odd
        assert (await api.delete(f"/api/credentials/{odd}")).status_code == 404, odd


async def test_a_planted_secret_appears_in_no_event_response_or_log(
    api: httpx.AsyncClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = f"planted-{uuid.uuid4().hex}"
    await api.post("/api/credentials", json=_credential("pg_secret", settings, secret))
    execution = await run_playbook(
        api,
        """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: leak, path: tests/leak}
workflow:
  - step: start
    tool: {kind: postgres, auth: pg_secret, query: "SELECT 41 + 1 AS answer"}
    next: [broken]
  - step: broken
    tool: {kind: postgres, auth: pg_secret, query: "SELEC oops"}
""",
    )
    assert execution["status"] == "FAILED"
    assert "syntax error" in execution["error"]
    events = await event_log(api, execution["execution_id"])
    answer = next(e for e in events if e["event_type"] == "command.completed")
    assert answer["result"]["rows"] == [{"answer": 42}]
    seen = [json.dumps(events), json.dumps(execution)]
    for event in events:
        if event["event_type"] == "command.issued":
            seen.append((await api.get(f"/api/commands/{event['event_id']}")).text)
    seen.append((await api.get("/api/executions")).text)
    seen.append((await api.get("/api/credentials")).text)
    seen.append(caplog.text)
    with psycopg.connect(settings.require_database_url()) as conn:
        rows = conn.execute("SELECT row_to_json(e)::text FROM noetl.event e").fetchall()
        seen += [row[0] for row in rows]
        rows = conn.execute("SELECT row_to_json(c)::text FROM noetl.command c").fetchall()
        seen += [row[0] for row in rows]
    assert all(secret not in text for text in seen)


async def test_an_unknown_credential_fails_the_step_by_name(api: httpx.AsyncClient) -> None:
    execution = await run_playbook(
        api,
        """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: nocred, path: tests/nocred}
workflow:
  - step: start
    tool: {kind: postgres, auth: nowhere, query: "SELECT 1"}
""",
    )
    assert execution["status"] == "FAILED"
    assert "credential 'nowhere' does not exist" in execution["error"]


async def test_tokens_guard_every_route_but_health(settings: Settings) -> None:
    settings = settings.with_(api_token="admin-token", worker_token="worker-token")
    async with running(settings, workers=1) as rt:
        async with httpx.AsyncClient(base_url=rt.url) as anonymous:
            assert (await anonymous.get("/health")).status_code == 200
            for method, path in [
                ("GET", "/api/executions"),
                ("GET", "/api/catalog"),
                ("POST", "/api/execute"),
                ("GET", "/api/credentials"),
                ("POST", "/api/commands/1/claim"),
                ("GET", "/metrics"),
            ]:
                response = await anonymous.request(method, path)
                assert response.status_code == 401, path
                assert response.json() == {
                    "error": "Unauthorized",
                    "message": "missing or invalid bearer token",
                }
            wrong = await anonymous.get("/api/executions", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        worker = {"Authorization": "Bearer worker-token"}
        async with httpx.AsyncClient(base_url=rt.url, headers=worker) as as_worker:
            assert (await as_worker.get("/api/executions")).status_code == 401
            assert (
                await as_worker.post("/api/commands/1/claim", json={"worker_id": "w"})
            ).status_code == 404
        admin = {"Authorization": "Bearer admin-token"}
        async with httpx.AsyncClient(base_url=rt.url, headers=admin) as client:
            execution = await run_playbook(
                client,
                """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: guarded, path: tests/guarded}
workflow:
  - step: start
    tool: {kind: noop, result: {ok: true}}
""",
            )
            assert execution["status"] == "COMPLETED"  # the worker used the worker token


async def test_keychain_entries_are_resolved_on_the_worker_only(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    secret = f"token-{uuid.uuid4().hex}"
    await api.post(
        "/api/credentials", json={"name": "api_cred", "type": "bearer", "data": {"token": secret}}
    )
    execution = await run_playbook(
        api,
        """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: keyed, path: tests/keyed}
keychain:
  - {name: api, credential: api_cred}
workflow:
  - step: start
    tool:
      kind: python
      input: {header: "Bearer {{ keychain.api.token }}"}
      code: |
        import hashlib
        result = {"length": len(header), "sha": hashlib.sha256(header.encode()).hexdigest()}
""",
    )
    assert execution["status"] == "COMPLETED", execution["error"]
    import hashlib

    expected = f"Bearer {secret}"
    assert execution["result"] == {
        "length": len(expected),
        "sha": hashlib.sha256(expected.encode()).hexdigest(),
    }
    events = await event_log(api, execution["execution_id"])
    assert secret not in json.dumps(events)
