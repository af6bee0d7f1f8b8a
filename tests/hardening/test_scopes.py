"""Token scopes: the worker token opens the worker routes only (credential data only for a
command it holds); the API token manages credentials and never reads decrypted data."""

from __future__ import annotations

import httpx
import psycopg

from noetl.config import Settings
from noetl.embedded.runtime import running
from tests.conftest import event_log, run_playbook

PLAYBOOK = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: scoped, path: tests/scoped}
keychain:
  - {name: api, credential: scoped_cred}
workflow:
  - step: start
    tool:
      kind: python
      input: {token: "{{ keychain.api.token }}"}
      code: "result = {'length': len(token)}"
"""

HELD = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: held, path: tests/held}
workflow:
  - step: start
    tool: {kind: noop}
"""


async def test_token_scopes(settings: Settings) -> None:
    settings = settings.with_(api_token="admin-token", worker_token="worker-token")
    admin = {"Authorization": "Bearer admin-token"}
    worker = {"Authorization": "Bearer worker-token"}
    async with running(settings, workers=1) as rt:
        async with httpx.AsyncClient(base_url=rt.url, headers=admin) as api:
            created = await api.post(
                "/api/credentials",
                json={"name": "scoped_cred", "type": "bearer", "data": {"token": "s3cr3t-value"}},
            )
            assert created.status_code == 201
            assert (await api.get("/api/credentials")).status_code == 200
            meta = await api.get("/api/credentials/scoped_cred")
            assert meta.status_code == 200 and "data" not in meta.json()
            data = await api.get("/api/credentials/scoped_cred", params={"include_data": "true"})
            assert data.status_code == 403 and "s3cr3t" not in data.text
            execution = await run_playbook(api, PLAYBOOK)
            assert execution["status"] == "COMPLETED", execution["error"]  # the worker read it
            assert execution["result"] == {"length": len("s3cr3t-value")}
        async with httpx.AsyncClient(base_url=rt.url, headers=worker) as as_worker:
            for method, path in [
                ("GET", "/api/credentials"),
                ("POST", "/api/credentials"),
                ("DELETE", "/api/credentials/scoped_cred"),
                ("GET", "/api/credentials/scoped_cred"),
                ("GET", "/api/executions"),
            ]:
                response = await as_worker.request(method, path, json={})
                assert response.status_code in {401, 403}, (method, path, response.text)
            unheld = await as_worker.get(
                "/api/credentials/scoped_cred", params={"include_data": "true"}
            )
            assert unheld.status_code == 403 and "s3cr3t" not in unheld.text
        async with httpx.AsyncClient(base_url=rt.url, headers=admin) as api:
            other = {"name": "other_cred", "type": "bearer", "data": {"token": "other-value"}}
            assert (await api.post("/api/credentials", json=other)).status_code == 201
            started = (await api.post("/api/execute", json={"playbook": PLAYBOOK})).json()
            await run_playbook(api, HELD)  # settles; its command is no longer held
            [issued] = [
                e
                for e in await event_log(api, started["execution_id"])
                if e["event_type"] == "command.issued"
            ]
        async with httpx.AsyncClient(base_url=rt.url, headers=worker) as as_worker:
            params = {"include_data": "true", "command": issued["event_id"]}
            ended = await as_worker.get("/api/credentials/scoped_cred", params=params)
            assert ended.status_code == 403
            with psycopg.connect(settings.require_database_url(), autocommit=True) as conn:
                conn.execute(
                    "UPDATE noetl.command SET status = 'CLAIMED', worker_id = 'w-holder',"
                    " lease_until = now() + interval '1 minute' WHERE event_id = %s",
                    (int(issued["event_id"]),),
                )
            held = await as_worker.get("/api/credentials/scoped_cred", params=params)
            assert held.status_code == 200 and held.json()["data"] == {"token": "s3cr3t-value"}
            mine = await as_worker.get(
                "/api/credentials/scoped_cred", params={**params, "worker": "w-holder"}
            )
            assert mine.status_code == 200
            # only what that command uses (its keychain), and only for the worker holding it
            unused = await as_worker.get("/api/credentials/other_cred", params=params)
            assert unused.status_code == 403 and "other-value" not in unused.text
            assert "does not use it" in unused.text
            elsewhere = await as_worker.get(
                "/api/credentials/scoped_cred", params={**params, "worker": "w-intruder"}
            )
            assert elsewhere.status_code == 403 and "s3cr3t" not in elsewhere.text
