"""Secrets never leave the worker in clear: a step that fails or prints with a credential value
in its message has it masked (***) in events, executions, the API and the logs, and its outcome
says it was masked."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from urllib.parse import urlparse

import httpx
import psycopg
import pytest

from noetl.config import Settings
from noetl.tools.result_store import ResultStore
from tests.conftest import event_log, run_playbook
from tests.token_server import token_server


async def test_secrets_in_errors_outputs_and_logs_are_masked(
    api: httpx.AsyncClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = f"tok{uuid.uuid4().hex}"
    user = f"user_{uuid.uuid4().hex[:10]}"
    await api.post(
        "/api/credentials", json={"name": "api_key", "type": "bearer", "data": {"token": token}}
    )
    pg = urlparse(settings.require_database_url())
    await api.post(
        "/api/credentials",
        json={
            "name": "pg_wrong",
            "type": "postgres",
            "data": {
                "host": pg.hostname,
                "port": pg.port,
                "user": user,
                "password": "whatever1",
                "database": "postgres",
            },
        },
    )
    header = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: masked, path: tests/masked}
keychain:
  - {name: api, credential: api_key}
workflow:
"""
    python_fails = await run_playbook(
        api,
        header
        + """  - step: start
    tool:
      kind: python
      input: {token: "{{ keychain.api.token }}"}
      code: "result = int(token)"
""",
    )
    shell_prints = await run_playbook(
        api,
        header
        + """  - step: start
    tool:
      kind: shell
      command: 'echo "token=$TOKEN"; printf %s "$TOKEN" | base64; echo "$TOKEN" >&2'
      env: {TOKEN: "{{ keychain.api.token }}"}
""",
    )
    postgres_fails = await run_playbook(
        api,
        header
        + """  - step: start
    tool: {kind: postgres, auth: pg_wrong, query: "SELECT 1"}
""",
    )
    assert python_fails["status"] == "FAILED"
    assert "invalid literal for int() with base 10: '***'" in python_fails["error"]
    assert shell_prints["status"] == "COMPLETED", shell_prints["error"]
    assert shell_prints["result"]["stdout"].startswith("token=***\n***")
    assert postgres_fails["status"] == "FAILED" and "***" in postgres_fails["error"]
    seen = [json.dumps([python_fails, shell_prints, postgres_fails]), caplog.text]
    for execution in (python_fails, shell_prints, postgres_fails):
        events = await event_log(api, execution["execution_id"])
        seen.append(json.dumps(events))
        [outcome] = [
            e
            for e in events
            if e["event_type"].startswith("command.")
            and e["event_type"] != "command.issued"
            and e["event_type"] != "command.claimed"
        ]
        assert outcome["payload"]["masked"] is True, outcome
    seen.append((await api.get("/api/executions")).text)
    with psycopg.connect(settings.require_database_url()) as conn:
        seen += [r[0] for r in conn.execute("SELECT row_to_json(e)::text FROM noetl.event e")]
        seen += [r[0] for r in conn.execute("SELECT row_to_json(x)::text FROM noetl.execution x")]
    encoded = base64.b64encode(token.encode()).decode()
    for text in seen:
        assert token not in text and encoded not in text and user not in text


async def test_keychain_tokens_and_env_secrets_are_masked_in_the_worker_log(
    api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every secret the worker learns reaches its log filter, not only stored credentials: an
    oauth2 token and a `secrets provider: env` value printed by a step (logged at DEBUG)."""
    caplog.set_level(logging.DEBUG)
    env_secret = f"EnvSecret{uuid.uuid4().hex}"
    monkeypatch.setenv("NOETL_TEST_ENV_SECRET", env_secret)
    with token_server() as server:
        playbook = f"""apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: learned, path: tests/learned}}
keychain:
  - name: oauth
    kind: oauth2
    endpoint: {server.token_url}
    data: {{grant_type: client_credentials, client_id: cid, client_secret: csecret}}
  - {{name: env, kind: secrets, provider: env, map: {{value: NOETL_TEST_ENV_SECRET}}}}
workflow:
  - step: start
    tool:
      kind: python
      input: {{oauth: "{{{{ keychain.oauth.access_token }}}}", env: "{{{{ keychain.env.value }}}}"}}
      code: |
        print("oauth", oauth, "env", env)
        result = {{"n": len(oauth) + len(env)}}
"""
        execution = await run_playbook(api, playbook)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert "python step start stdout:\noauth *** env ***" in caplog.text
    assert "access-1-cid" not in caplog.text and env_secret not in caplog.text


LAUNDER = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: launder, path: tests/launder}
keychain: [{name: api, kind: credential, credential: plain}]
workflow:
  - step: start
    tool:
      kind: python
      input: {token: "{{ keychain.api.token }}"}
      code: 'result = {"plain": token, "n": 1}'
    output: OUTPUT
    next: [{step: launder}]
  - step: launder
    tool:
      kind: python
      input: {v: "{{ start.plain }}"}
      code: 'print("laundered:", v); result = {"got": v}'
    next: [{step: end}]
  - step: end
"""


@pytest.mark.parametrize(
    "kept",
    [
        "{select: [n], store: {kind: kv}}",
        "{select: [n], store: {kind: object}}",
        "{select: [n], store: {kind: disk}}",
        "{store: {kind: auto}, inline_max_bytes: 8}",  # auto, over the inline limit
    ],
)
async def test_a_result_kept_by_reference_is_masked_before_it_is_stored(
    api: httpx.AsyncClient, settings: Settings, kept: str
) -> None:
    """The result store is outside the worker: a secret in a result kept there is masked
    before it is written, so neither the store nor a later step that reads it sees it."""
    secret = f"Sup3rS3cr3t{uuid.uuid4().hex}"
    await api.post(
        "/api/credentials", json={"name": "plain", "type": "generic", "data": {"token": secret}}
    )
    execution = await run_playbook(api, LAUNDER.replace("OUTPUT", kept))
    assert execution["status"] == "COMPLETED", execution["error"]
    events = await event_log(api, execution["execution_id"])
    completed = {e["step"]: e for e in events if e["event_type"] == "command.completed"}
    assert (completed["start"]["payload"] or {}).get("masked") is True
    stored = await ResultStore(settings.nats_url, settings.home).get(
        completed["start"]["result"]["_ref"]
    )
    assert stored == {"plain": "***", "n": 1}
    assert completed["launder"]["result"] == {"got": "***"}
    logs = (await api.get(f"/api/executions/{execution['execution_id']}/logs")).text
    assert "laundered: ***" in logs
    seen = [json.dumps(events), logs, json.dumps(stored)]
    with psycopg.connect(settings.require_database_url()) as conn:
        seen += [r[0] for r in conn.execute("SELECT row_to_json(e)::text FROM noetl.event e")]
        seen += [r[0] for r in conn.execute("SELECT row_to_json(c)::text FROM noetl.command c")]
    assert all(secret not in text for text in seen)


CHILD = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: child, path: tests/secret_child}
workflow:
  - step: start
    tool: {kind: python, input: {tok: "{{ tok }}"}, code: "result = {'n': len(tok)}"}
"""

PARENT = """apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: parent, path: tests/secret_parent}
keychain: [{name: api, kind: credential, credential: child_secret}]
workflow:
  - step: start
    tool:
      kind: playbook
      path: tests/secret_child
      input: {label: plain, tok: "Bearer {{ keychain.api.token }}"}
"""


async def test_a_secret_is_never_passed_to_a_sub_playbook(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    """A child's workload is stored in clear (its events, commands and execution row): a
    keychain value in a sub-playbook's input fails the step, naming the step and the field,
    and no child is started."""
    secret = f"ChildS3cret{uuid.uuid4().hex}"
    await api.post(
        "/api/credentials",
        json={"name": "child_secret", "type": "bearer", "data": {"token": secret}},
    )
    assert (await api.post("/api/catalog/register", content=CHILD)).status_code == 201
    execution = await run_playbook(api, PARENT)
    assert execution["status"] == "FAILED"
    assert (
        "step start: sub-playbook tests/secret_child: input 'tok' holds a secret"
        in (execution["error"])
    )
    children = await api.get("/api/executions", params={"parent": execution["execution_id"]})
    assert children.json()["items"] == []
    seen = [json.dumps(await event_log(api, execution["execution_id"]))]
    with psycopg.connect(settings.require_database_url()) as conn:
        for table in ("event", "command", "execution"):
            seen += [
                r[0] for r in conn.execute(f"SELECT row_to_json(x)::text FROM noetl.{table} x")
            ]
    assert all(secret not in text for text in seen)
