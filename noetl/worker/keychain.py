"""Keychain entries, resolved on the worker right before the tools that read them run.

A playbook's `keychain:` lists named entries; templates read an entry's values as
`keychain.<name>.<field>`. Only the entries a command's templates reference (and the entries
those entries reference) are resolved, so a keychain entry nobody reads costs nothing and never
calls its token endpoint. Values never leave the worker: `secret_strings` lists them so that
the worker masks them in what it reports.

Kinds (fields in `noetl.dsl.tool_schema.KEYCHAIN_KINDS`):

    credential       `credential`: the data of a stored credential
    static           `map`: the rendered mapping itself
    bearer           `token`: {token, access_token, token_type: Bearer}
    secrets          `map` of field -> secret reference, read from `provider`:
                     `noetl` (default; a stored credential `name`, or one field `name.field`)
                     or `env` (an environment variable of the worker); cloud providers (gcp,
                     aws, azure, vault) fail naming the missing service
    oauth2           POST (or `method`) to `endpoint` with `data` (form), `json`, `headers`;
                     the JSON answer (access_token, expires_in, ...) plus `token`
    google_id_token  a service account (`service_account_credential`: a stored credential with
                     client_email, private_key, token_uri) signs a JWT for `target_audience`,
                     exchanged at its token_uri for {id_token, token}
    google_oauth     (`type:` spelling) the credential `ref` / `credential`: an access token
                     obtained with its service account, or its own `access_token`

Templates may also call upstream's `token(<credential name>)`: the same access token as a
`google_oauth` entry for that credential, resolved before the step's tools run.

Token kinds are cached until `expires_in` (less a margin): per execution, or across executions
on this worker with `scope: global`. When a cached token has expired it is fetched again if
`auto_renew` (default true); with `auto_renew: false` the step fails instead.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from noetl.credential_names import needed
from noetl.dsl.template import plain, render
from noetl.errors import TemplateError
from noetl.tools.base import ToolError

log = logging.getLogger(__name__)

FetchCredential = Callable[[str], Awaitable[Mapping[str, Any] | None]]
TOKEN_KINDS = frozenset({"oauth2", "google_id_token", "google_oauth"})
GLOBAL_SCOPES = frozenset({"global", "shared", "catalog"})
RENEW_MARGIN = 60.0
DEFAULT_LIFETIME = 3600.0
HTTP_TIMEOUT = 30.0
_CLOUD_SECRETS = {
    "gcp": "Google Secret Manager (gcp-secret-manager)",
    "google": "Google Secret Manager (gcp-secret-manager)",
    "aws": "AWS Secrets Manager",
    "azure": "Azure Key Vault",
    "vault": "a HashiCorp Vault server",
}
_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@dataclass
class _Cached:
    value: dict[str, Any]
    expires_at: float


class Keychain:
    """Resolves keychain entries; keeps token kinds until they expire (see module docstring)."""

    def __init__(
        self,
        fetch_credential: FetchCredential,
        *,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._fetch = fetch_credential
        self._clock = clock
        self._environ = os.environ if environ is None else environ
        self._cache: dict[tuple[str, ...], _Cached] = {}

    async def resolve(
        self,
        entries: Mapping[str, Mapping[str, Any]],
        roots: Iterable[str],
        context: Mapping[str, Any],
        execution_id: int,
    ) -> dict[str, dict[str, Any]]:
        """The values of the entries `roots` reference (and what those reference)."""
        values: dict[str, dict[str, Any]] = {}
        for name in needed(entries, roots):
            entry = dict(entries[name])
            scope = {**context, "keychain": values}
            try:
                rendered = plain(render({k: v for k, v in entry.items() if k != "name"}, scope))
            except TemplateError as exc:
                raise ToolError(f"keychain entry {name!r}: template error: {exc}") from None
            values[name] = await self._value(name, rendered, execution_id)
        return values

    async def tokens(
        self, expressions: Iterable[str], context: Mapping[str, Any], execution_id: int
    ) -> dict[str, str]:
        """Access tokens for upstream's `token(<credential>)`: each expression names a stored
        credential (a Google service account, or one holding an access_token)."""
        tokens: dict[str, str] = {}
        for expression in expressions:
            try:
                name = str(plain(render("{{ " + expression + " }}", context)))
            except TemplateError as exc:
                raise ToolError(f"token({expression}): template error: {exc}") from None
            entry = {"type": "google_oauth", "ref": name, "scope": "global"}
            value = await self._value(name, entry, execution_id)
            tokens[name] = str(value["access_token"])
        return tokens

    async def _value(self, name: str, entry: dict[str, Any], execution_id: int) -> dict[str, Any]:
        kind = str(entry.get("kind") or entry.get("type") or "credential")
        if kind not in TOKEN_KINDS:
            return await self._plain(name, kind, entry)
        global_scope = str(entry.get("scope") or "local") in GLOBAL_SCOPES
        key = (
            name,
            json.dumps(entry, sort_keys=True, default=str),
            "" if global_scope else str(execution_id),
        )
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None:
            if now < cached.expires_at:
                return cached.value
            if entry.get("auto_renew") in (False, "false"):
                raise ToolError(f"keychain entry {name!r}: token expired and auto_renew is false")
        value, lifetime = await self._token(name, kind, entry)
        self._cache[key] = _Cached(value, now + max(lifetime - RENEW_MARGIN, 0.0))
        return value

    async def _plain(self, name: str, kind: str, entry: dict[str, Any]) -> dict[str, Any]:
        if kind == "credential":
            return await self._credential(name, entry.get("credential"))
        if kind == "static":
            return _mapping(name, entry.get("map"))
        if kind == "bearer":
            token = entry.get("token")
            if not isinstance(token, str) or not token:
                raise ToolError(f"keychain entry {name!r}: bearer `token` is empty")
            extra = _mapping(name, entry["map"]) if entry.get("map") else {}
            return {**extra, "token": token, "access_token": token, "token_type": "Bearer"}
        if kind == "secrets":
            return await self._secrets(name, entry)
        raise ToolError(f"keychain entry {name!r}: unknown kind {kind!r}")

    async def _credential(self, name: str, credential: Any) -> dict[str, Any]:
        if not isinstance(credential, str) or not credential:
            raise ToolError(f"keychain entry {name!r}: `credential` must name a credential")
        data = await self._fetch(credential)
        if data is None:
            raise ToolError(f"keychain entry {name!r}: credential {credential!r} does not exist")
        return dict(data)

    async def _secrets(self, name: str, entry: dict[str, Any]) -> dict[str, Any]:
        provider = str(entry.get("provider") or "noetl").lower()
        if provider in _CLOUD_SECRETS:
            raise ToolError(
                f"keychain entry {name!r}: secrets provider {provider!r} needs"
                f" {_CLOUD_SECRETS[provider]}, which is not available in this installation"
            )
        if provider not in {"noetl", "local", "credential", "env"}:
            raise ToolError(f"keychain entry {name!r}: unknown secrets provider {provider!r}")
        values: dict[str, Any] = {}
        for field, reference in _mapping(name, entry.get("map")).items():
            ref = str(reference)
            if provider == "env":
                if ref not in self._environ:
                    raise ToolError(
                        f"keychain entry {name!r}: environment variable {ref!r} is not set"
                    )
                values[field] = self._environ[ref]
                continue
            credential, _, key = ref.partition(".")
            data = await self._credential(name, credential)
            if not key:
                values[field] = data
            elif key in data:
                values[field] = data[key]
            else:
                raise ToolError(
                    f"keychain entry {name!r}: credential {credential!r} has no field {key!r}"
                )
        return values

    async def _token(
        self, name: str, kind: str, entry: dict[str, Any]
    ) -> tuple[dict[str, Any], float]:
        if kind == "oauth2":
            return await _oauth2(name, entry)
        if kind == "google_id_token":
            account = await self._service_account(name, entry)
            return await _google_token(name, account, audience=entry.get("target_audience"))
        credential = entry.get("ref") or entry.get("credential") or name
        data = await self._credential(name, credential)
        if "private_key" in data and "client_email" in data:
            return await _google_token(name, data, scopes=entry.get("scopes") or _GOOGLE_SCOPE)
        token = data.get("access_token") or data.get("token")
        if not token:
            raise ToolError(
                f"keychain entry {name!r}: credential {credential!r} has neither a service"
                " account (client_email, private_key) nor an access_token"
            )
        return {"access_token": token, "token": token}, DEFAULT_LIFETIME

    async def _service_account(self, name: str, entry: dict[str, Any]) -> dict[str, Any]:
        if entry.get("service_account_credential"):
            data = await self._credential(name, entry["service_account_credential"])
            inner = data.get("service_account_json") or data.get("service_account") or data
            account: dict[str, Any] = json.loads(inner) if isinstance(inner, str) else dict(inner)
            return account
        if entry.get("service_account_secret"):
            raise ToolError(
                f"keychain entry {name!r}: service_account_secret is read from Google Secret"
                " Manager (gcp-secret-manager), which is not available in this installation;"
                " store the service account as a credential and use service_account_credential"
            )
        raise ToolError(
            f"keychain entry {name!r}: google_id_token needs service_account_credential"
            " (Google application default credentials are not available here)"
        )


def _mapping(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ToolError(f"keychain entry {name!r}: `map` must be a mapping")
    return dict(value)


async def _post(name: str, url: Any, method: str = "POST", **kwargs: Any) -> dict[str, Any]:
    if not isinstance(url, str) or not url:
        raise ToolError(f"keychain entry {name!r}: no token endpoint")
    shown = url.split("?", 1)[0]
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            response = await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise ToolError(
            f"keychain entry {name!r}: token endpoint {shown} failed: {reason}", retryable=True
        ) from None
    if response.status_code >= 400:
        raise ToolError(
            f"keychain entry {name!r}: token endpoint {shown} answered HTTP {response.status_code}",
            retryable=response.status_code >= 500 or response.status_code == 429,
        )
    try:
        body = response.json()
    except ValueError:
        raise ToolError(f"keychain entry {name!r}: token endpoint {shown} sent no JSON") from None
    if not isinstance(body, dict):
        raise ToolError(f"keychain entry {name!r}: token endpoint {shown} sent no JSON object")
    return body


def _lifetime(body: Mapping[str, Any]) -> float:
    try:
        return float(body.get("expires_in") or DEFAULT_LIFETIME)
    except (TypeError, ValueError):
        return DEFAULT_LIFETIME


async def _oauth2(name: str, entry: dict[str, Any]) -> tuple[dict[str, Any], float]:
    kwargs: dict[str, Any] = {
        "headers": {str(k): str(v) for k, v in (entry.get("headers") or {}).items()}
    }
    if entry.get("json") is not None:
        kwargs["json"] = entry["json"]
    elif entry.get("data") is not None:
        data = entry["data"]
        kwargs["data" if isinstance(data, Mapping) else "content"] = (
            {str(k): str(v) for k, v in data.items()} if isinstance(data, Mapping) else str(data)
        )
    method = str(entry.get("method") or "POST").upper()
    body = await _post(name, entry.get("endpoint") or entry.get("url"), method, **kwargs)
    token = body.get("access_token")
    if not token:
        raise ToolError(f"keychain entry {name!r}: the token endpoint sent no access_token")
    return {**body, "token": token}, _lifetime(body)


async def _google_token(
    name: str,
    account: Mapping[str, Any],
    *,
    audience: Any = None,
    scopes: Any = None,
) -> tuple[dict[str, Any], float]:
    for field in ("client_email", "private_key"):
        if not account.get(field):
            raise ToolError(f"keychain entry {name!r}: the service account has no {field}")
    token_uri = str(account.get("token_uri") or "https://oauth2.googleapis.com/token")
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": account["client_email"],
        "sub": account["client_email"],
        "aud": token_uri,
        "iat": now,
        "exp": now + 3600,
    }
    if audience:
        claims["target_audience"] = str(audience)
    else:
        claims["scope"] = " ".join(scopes) if isinstance(scopes, list) else str(scopes)
    assertion = sign_jwt(claims, str(account["private_key"]), account.get("private_key_id"))
    body = await _post(name, token_uri, data={"grant_type": _JWT_GRANT, "assertion": assertion})
    if audience:
        token = body.get("id_token")
        if not token:
            raise ToolError(f"keychain entry {name!r}: the token endpoint sent no id_token")
        return {"id_token": token, "token": token}, _lifetime(body)
    token = body.get("access_token")
    if not token:
        raise ToolError(f"keychain entry {name!r}: the token endpoint sent no access_token")
    return {**body, "token": token}, _lifetime(body)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_jwt(claims: Mapping[str, Any], private_key_pem: str, key_id: Any = None) -> str:
    """An RS256 JWT of `claims` signed with a PEM private key (a service account's)."""
    # imported here: cryptography's key serialization loads its OID tables at import (~50 ms
    # of every worker's start, and of every `noetl run`), and only this function needs it
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ToolError(f"the service account's private_key is not a PEM key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ToolError("the service account's private_key is not an RSA key")
    header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
    if key_id:
        header["kid"] = str(key_id)
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(dict(claims), separators=(",", ":")).encode())
    )
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + _b64(signature)


_PUBLIC_FIELDS = frozenset(
    {
        "host",
        "port",
        "user",
        "username",
        "database",
        "dbname",
        "db",
        "schema",
        "url",
        "nats_url",
        "nats_user",
        "endpoint",
        "token_type",
        "expires_in",
        "scope",
        "type",
        "client_email",
        "project_id",
        "token_uri",
        "auth_uri",
        "sslmode",
        "region",
    }
)


def secret_strings(values: Mapping[str, Any], minimum: int = 4) -> list[str]:
    """The strings of resolved keychain values (longest first), for masking; values of
    fields that name a place or a person (host, port, user, url, ...) are not secrets."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            if len(value) >= minimum:
                found.add(value)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if str(key).lower() not in _PUBLIC_FIELDS:
                    walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(values)
    return sorted(found, key=len, reverse=True)
