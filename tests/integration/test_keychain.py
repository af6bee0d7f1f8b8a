"""Keychain entries resolved on the worker: every kind, token caching, and masking; the token
kinds against a real token endpoint on loopback (tests/token_server.py)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from noetl.credential_names import credentials_named, needed, referenced
from noetl.masking import Mask
from noetl.tools.base import ToolError
from noetl.worker.keychain import Keychain, secret_strings
from tests.conftest import event_log, run_playbook
from tests.token_server import token_server

CREDENTIALS: dict[str, dict[str, Any]] = {
    "api_keys": {"openai": "sk-live-123456", "other": "zzzz-9999"},
    "pg": {"host": "db.local", "password": "pg-secret-42"},
}


async def _fetch(name: str) -> dict[str, Any] | None:
    return CREDENTIALS.get(name)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_referenced_and_needed_follow_dependencies_in_declaration_order() -> None:
    entries: dict[str, dict[str, Any]] = {
        "creds": {"kind": "static", "map": {"id": "{{ client_id }}"}},
        "token": {"kind": "oauth2", "data": {"client_id": "{{ keychain.creds.id }}"}},
        "unused": {"kind": "bearer", "token": "x"},
    }
    roots = referenced({"headers": {"A": "Bearer {{ keychain['token'].access_token }}"}})
    assert roots == {"token"}
    assert needed(entries, roots) == ["creds", "token"]
    assert needed(entries, set()) == []
    # a dependency declared below the entry that reads it is resolved first (the oauth2 entry
    # was rendered first: "'dict object' has no attribute 'envk'")
    below = {"oauth": entries["token"] | {"data": {"id": "{{ keychain.envk.id }}"}}, **entries}
    below["envk"] = {"kind": "secrets", "provider": "env", "map": {"id": "CLIENT_ID"}}
    assert needed(below, {"oauth"}) == ["envk", "oauth"]
    assert needed(below, {"oauth", "token"}) == ["envk", "oauth", "creds", "token"]
    loop = {"a": {"x": "{{ keychain.b.y }}"}, "b": {"y": "{{ keychain.a.x }}"}}
    assert needed(loop, {"a"}) == ["b", "a"]


async def test_static_bearer_credential_and_secrets_kinds() -> None:
    keychain = Keychain(_fetch, environ={"MY_TOKEN": "env-token-value"})
    entries: dict[str, dict[str, Any]] = {
        "static": {"kind": "static", "map": {"client_id": "{{ cid }}", "n": 1}},
        "bearer": {"kind": "bearer", "token": "{{ tok }}"},
        "cred": {"kind": "credential", "credential": "{{ which }}"},
        "sec": {"kind": "secrets", "map": {"api_key": "api_keys.openai", "all": "pg"}},
        "envsec": {"kind": "secrets", "provider": "env", "map": {"token": "MY_TOKEN"}},
    }
    context = {"cid": "client-7", "tok": "bearer-abc", "which": "pg"}
    values = await keychain.resolve(entries, set(entries), context, execution_id=1)
    assert values["static"] == {"client_id": "client-7", "n": 1}
    assert values["bearer"]["access_token"] == "bearer-abc"
    assert values["cred"] == CREDENTIALS["pg"]
    assert values["sec"] == {"api_key": "sk-live-123456", "all": CREDENTIALS["pg"]}
    assert values["envsec"] == {"token": "env-token-value"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "secrets", "provider": "gcp", "map": {"k": "x"}}, "Google Secret Manager"),
        ({"kind": "credential", "credential": "missing"}, "credential 'missing' does not exist"),
        ({"kind": "secrets", "map": {"k": "api_keys.nope"}}, "has no field 'nope'"),
        ({"kind": "secrets", "provider": "env", "map": {"k": "UNSET_VAR"}}, "'UNSET_VAR'"),
        ({"kind": "static", "map": "{{ 5 }}"}, "must be a mapping"),
        ({"kind": "bearer", "token": "{{ nothing }}"}, "template error"),
        (
            {
                "kind": "google_id_token",
                "service_account_secret": "projects/x",
                "target_audience": "a",
            },
            "gcp-secret-manager",
        ),
    ],
)
async def test_a_bad_entry_fails_naming_the_entry_and_the_cause(
    entry: dict[str, Any], message: str
) -> None:
    keychain = Keychain(_fetch, environ={})
    with pytest.raises(ToolError) as caught:
        await keychain.resolve({"e": entry}, {"e"}, {}, execution_id=1)
    assert "keychain entry 'e'" in str(caught.value)
    assert message in str(caught.value)


async def test_oauth2_against_a_token_endpoint_is_cached_until_it_expires() -> None:
    clock = Clock()
    keychain = Keychain(_fetch, clock=clock)
    with token_server() as server:
        entry: dict[str, Any] = {
            "kind": "oauth2",
            "scope": "global",
            "auto_renew": True,
            "endpoint": server.token_url,
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            "data": {
                "grant_type": "client_credentials",
                "client_id": "{{ keychain.creds.id }}",
                "client_secret": "{{ keychain.creds.secret }}",
            },
        }
        entries: dict[str, dict[str, Any]] = {
            "creds": {"kind": "static", "map": {"id": "cid", "secret": "csecret"}},
            "tok": entry,
        }
        first = await keychain.resolve(entries, {"tok"}, {}, execution_id=1)
        assert first["tok"]["access_token"] == "access-1-cid"
        assert first["tok"]["token"] == "access-1-cid"
        again = await keychain.resolve(entries, {"tok"}, {}, execution_id=2)  # global scope
        assert again["tok"]["access_token"] == "access-1-cid"
        assert len(server.requests) == 1
        clock.now += 3600  # expired: renewed
        renewed = await keychain.resolve(entries, {"tok"}, {}, execution_id=2)
        assert renewed["tok"]["access_token"] == "access-2-cid"
        local: dict[str, dict[str, Any]] = {**entries, "tok": {**entry, "scope": "local"}}
        await keychain.resolve(local, {"tok"}, {}, execution_id=3)
        await keychain.resolve(local, {"tok"}, {}, execution_id=4)
        assert len(server.requests) == 4  # per execution


async def test_oauth2_without_auto_renew_fails_once_expired_and_bad_client_fails() -> None:
    clock = Clock()
    keychain = Keychain(_fetch, clock=clock)
    with token_server() as server:
        data = {"grant_type": "client_credentials", "client_id": "cid", "client_secret": "csecret"}
        entries = {
            "tok": {
                "kind": "oauth2",
                "endpoint": server.token_url,
                "auto_renew": False,
                "data": data,
            }
        }
        await keychain.resolve(entries, {"tok"}, {}, execution_id=1)
        clock.now += 7200
        with pytest.raises(ToolError, match="expired and auto_renew is false"):
            await keychain.resolve(entries, {"tok"}, {}, execution_id=1)
        bad = {"tok": {**entries["tok"], "data": {**data, "client_secret": "wrong"}}}
        with pytest.raises(ToolError, match="answered HTTP 401"):
            await keychain.resolve(bad, {"tok"}, {}, execution_id=9)
    with pytest.raises(ToolError, match=r"token endpoint .* failed") as caught:
        await keychain.resolve(bad, {"tok"}, {}, execution_id=10)  # the server is gone
    assert caught.value.retryable


async def test_google_id_token_signs_a_jwt_the_token_endpoint_verifies() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    with token_server(public_key=key.public_key()) as server:
        account = {
            "client_email": "sa@example.iam",
            "private_key": pem,
            "token_uri": server.token_url,
        }
        store = {"sa": {"service_account_json": json.dumps(account)}, "sa_plain": account}

        async def fetch(name: str) -> dict[str, Any] | None:
            return store.get(name)

        keychain = Keychain(fetch)
        entries = {
            "idt": {
                "kind": "google_id_token",
                "service_account_credential": "sa",
                "target_audience": "https://service.local",
            },
            "oauth": {"type": "google_oauth", "ref": "sa_plain"},
        }
        values = await keychain.resolve(entries, {"idt", "oauth"}, {}, execution_id=1)
        assert values["idt"]["id_token"] == "id-1-for-https://service.local"
        assert values["oauth"]["access_token"] == "sa-access-2"
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        store["sa_plain"] = {
            **account,
            "private_key": other.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
        }
        with pytest.raises(ToolError, match="HTTP 401"):  # signed by the wrong key
            await Keychain(fetch).resolve(entries, {"oauth"}, {}, execution_id=2)


def test_masking_replaces_secret_strings_but_not_places() -> None:
    values = {"pg": {"host": "db.local", "password": "pg-secret-42"}, "t": {"token": "abcdefgh"}}
    secrets = secret_strings(values)
    assert secrets == ["pg-secret-42", "abcdefgh"]
    masked, hit = Mask(secrets).value(
        {"msg": "login pg-secret-42 at db.local", "list": ["abcdefgh", 3]}
    )
    assert hit
    assert masked == {"msg": "login *** at db.local", "list": ["***", 3]}


async def test_a_playbook_reads_keychain_values_and_events_never_show_them(
    api: httpx.AsyncClient,
) -> None:
    with token_server() as server:
        await api.post(
            "/api/credentials",
            json={"name": "api_keys", "type": "generic", "data": CREDENTIALS["api_keys"]},
        )
        playbook = f"""
apiVersion: noetl.io/v2
kind: Playbook
metadata: {{name: keychain_use, path: tests/keychain_use}}
workload: {{client_id: cid, client_secret: csecret}}
keychain:
  - name: creds
    kind: static
    scope: global
    map: {{id: "{{{{ client_id }}}}", secret: "{{{{ client_secret }}}}"}}
  - name: token
    kind: oauth2
    endpoint: {server.token_url}
    data:
      grant_type: client_credentials
      client_id: "{{{{ keychain.creds.id }}}}"
      client_secret: "{{{{ keychain.creds.secret }}}}"
  - {{name: apikeys, kind: credential, credential: api_keys}}
  - {{name: never, kind: oauth2, endpoint: "http://127.0.0.1:9/unreachable"}}
workflow:
  - step: start
    tool:
      kind: python
      input:
        auth: "Bearer {{{{ keychain.token.access_token }}}}"
        key: "{{{{ keychain.apikeys.openai }}}}"
      code: |
        print("using", key, auth)
        result = {{"auth": auth, "key_length": len(key), "echo": key}}
"""
        execution = await run_playbook(api, playbook)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {"auth": "Bearer ***", "key_length": 14, "echo": "***"}
    assert len(server.requests) == 1  # `never` is not referenced: never fetched
    log = json.dumps(await event_log(api, execution["execution_id"]))
    printed = (await api.get(f"/api/executions/{execution['execution_id']}/logs")).json()
    assert printed["items"][0]["text"] == "using *** Bearer ***\n"
    for secret in ("access-1-cid", "sk-live-123456"):
        assert secret not in log
        assert secret not in json.dumps(printed)


async def test_upstreams_token_function_resolves_a_stored_credential_on_the_worker(
    api: httpx.AsyncClient,
) -> None:
    stored = {"name": "svc_token", "type": "google_oauth", "data": {"access_token": "ya29-abcdef"}}
    assert (await api.post("/api/credentials", json=stored)).status_code == 201
    playbook = """
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: token_fn, path: tests/token_fn}
workload: {google_auth: svc_token}
workflow:
  - step: start
    tool:
      kind: python
      input: {header: "Bearer {{ token(google_auth) }}"}
      code: |
        result = {"header": header, "length": len(header)}
"""
    execution = await run_playbook(api, playbook)
    assert execution["status"] == "COMPLETED", execution["error"]
    assert execution["result"] == {"header": "Bearer ***", "length": 18}
    missing = await run_playbook(api, playbook, {"google_auth": "google_oauth"})
    assert missing["status"] == "FAILED"
    assert "credential 'google_oauth' does not exist" in missing["error"]


def test_a_command_names_the_credentials_its_tools_keychain_and_token_calls_use() -> None:
    """What the server lets a worker read for a command (credential_routes): nothing else."""
    tool = {
        "kind": "pipeline",
        "items": [
            {"kind": "postgres", "config": {"auth": "pg_main"}},
            {"kind": "http", "config": {"credential": "{{ which }}", "url": "{{ keychain.a.x }}"}},
            {"kind": "transfer", "config": {"source": {"auth": "src"}, "target": {"auth": "dst"}}},
            {"kind": "python", "config": {"code": "t = '{{ token(\"svc\") }}'"}},
        ],
    }
    tool_input = {
        "context": {"which": "picked"},
        "step": {},
        "keychain": {
            "a": {"kind": "secrets", "map": {"x": "via_map.field", "y": "{{ keychain.b.v }}"}},
            "b": {"kind": "credential", "credential": "for_b"},
            "g": {"type": "google_oauth"},
            "unread": {"kind": "credential", "credential": "never_read"},
        },
    }
    assert credentials_named(tool, tool_input) == {
        "pg_main",
        "picked",
        "src",
        "dst",
        "svc",
        "via_map",
        "for_b",
    }
    assert credentials_named({"kind": "noop"}, {}) == set()


async def test_an_entry_reads_an_entry_declared_below_it() -> None:
    entries = {
        "api": {"kind": "static", "map": {"id": "{{ keychain.envk.id }}"}},
        "envk": {"kind": "secrets", "provider": "env", "map": {"id": "CLIENT_ID"}},
    }
    values = await Keychain(_fetch, environ={"CLIENT_ID": "abc-123"}).resolve(
        entries, {"api"}, {}, execution_id=1
    )
    assert values["api"] == {"id": "abc-123"}
