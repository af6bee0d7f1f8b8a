"""What the parser knows about tools: their kinds, the types of their fields, keychain entries
and a step's `output` block.

Kinds are of three sorts:
- run here: python, http, postgres, duckdb, shell, noop, nats, artifact, transfer (workers),
  workbook and playbook (resolved or run by the server);
- need a service this installation does not have (`UNAVAILABLE`): accepted at registration so
  that upstream playbooks register unchanged, and failing at run time with an error naming the
  kind and the missing service.

Field types are checked where the schema knows the field (`FIELDS`); a value that is a
template (`{{ ... }}`) is only known at run time and always passes here. Unknown fields are
accepted: upstream tools carry many optional fields, and a field no tool reads has no effect.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from noetl.dsl.template import is_template

RUN_HERE = frozenset(
    {
        "python",
        "http",
        "postgres",
        "duckdb",
        "shell",
        "noop",
        "workbook",
        "playbook",
        "nats",
        "artifact",
        "transfer",
    }
)

UNAVAILABLE: Mapping[str, str] = {
    "snowflake": "a Snowflake account",
    "gcs": "Google Cloud Storage",
    "s3": "Amazon S3",
    "ducklake": "a DuckLake catalog (a metadata database plus object storage)",
    "container": "a Kubernetes cluster to run the container in",
    "script": "a Kubernetes cluster to run the script as a job",
    "agent": "an agent framework and a model server (e.g. Ollama)",
    "mcp": "an MCP server",
    "subscription": "a message broker subscription (Kafka or Google Pub/Sub)",
    "kafka": "a Kafka broker",
    "pubsub": "Google Pub/Sub",
    "gcp_secret_manager": "Google Secret Manager",
    "bigquery": "Google BigQuery",
}
"""Kinds accepted at registration that fail at run time, with the service each one needs."""

TOOL_KINDS = RUN_HERE | frozenset(UNAVAILABLE)

# A field's allowed types: names from `_TYPES`. Templates always pass.
_STR = ("string",)
_NUM = ("number",)
_BOOL = ("boolean",)
_MAP = ("mapping",)
_LIST = ("list",)
_TIMEOUT = ("number",)
FIELDS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "python": {
        "code": _STR,
        "script": ("string", "mapping"),
        "libs": ("mapping", "list"),
        "args": _MAP,
        "isolated": _BOOL,
        "timeout_seconds": _TIMEOUT,
        "timeout": _TIMEOUT,
    },
    "http": {
        "url": _STR,
        "endpoint": _STR,
        "method": _STR,
        "headers": _MAP,
        "params": _MAP,
        "form": _MAP,
        "timeout_seconds": _TIMEOUT,
        "timeout": _TIMEOUT,
        "follow_redirects": _BOOL,
        "verify": ("boolean", "string"),
        "verify_ssl": _BOOL,
    },
    "postgres": {
        "query": _STR,
        "command": _STR,
        "commands": ("string", "list"),
        "params": ("list", "mapping"),
        "timeout_seconds": _TIMEOUT,
        "timeout": _TIMEOUT,
        "script": _MAP,
    },
    "duckdb": {
        "query": _STR,
        "command": _STR,
        "commands": ("string", "list"),
        "params": ("list", "mapping"),
        "db_path": _STR,
        "timeout_seconds": _TIMEOUT,
        "timeout": _TIMEOUT,
    },
    "shell": {
        "command": ("string", "list"),
        "cmds": ("list", "string"),
        "cwd": _STR,
        "env": _MAP,
        "timeout_seconds": _TIMEOUT,
        "timeout": _TIMEOUT,
    },
    "nats": {
        "operation": _STR,
        "bucket": _STR,
        "key": _STR,
        "subject": _STR,
        "timeout_seconds": _TIMEOUT,
        "timeout": _TIMEOUT,
    },
    "transfer": {"source": _MAP, "target": _MAP, "chunk_size": _NUM},
    "artifact": {"action": _STR},
    "playbook": {
        "path": _STR,
        "return_step": _STR,
        "payload": _MAP,
        "timeout_seconds": _TIMEOUT,
        "timeout": _TIMEOUT,
    },
}

NATS_OPERATIONS = frozenset({"publish", "request", "kv_put", "kv_get", "kv_delete", "kv_keys"})
_ENUMS: Mapping[tuple[str, str], frozenset[str]] = {
    ("nats", "operation"): NATS_OPERATIONS,
    ("artifact", "action"): frozenset({"get", "put"}),
}

KEYCHAIN_KINDS: Mapping[str, tuple[str, ...]] = {
    "credential": ("credential",),
    "static": ("map",),
    "bearer": ("token",),
    "secrets": ("map",),
    "oauth2": ("endpoint",),
    "google_id_token": ("target_audience",),
    "google_oauth": (),
}
"""Keychain entry kinds and the fields each one requires."""

SCOPES = frozenset({"global", "local", "catalog", "shared", "execution"})

OUTPUT_KEYS = frozenset({"select", "output_select", "store", "inline_max_bytes"})
STORE_KINDS = frozenset({"auto", "kv", "object", "disk", "memory", "gcs", "s3"})


Problem = tuple[tuple[str | int, ...], str]


def check_tool(kind: str, config: Mapping[str, Any]) -> Iterator[Problem]:
    """Type problems of a tool's fields, as (path inside the tool, message)."""
    for field, allowed in FIELDS.get(kind, {}).items():
        if field not in config:
            continue
        value = config[field]
        if value is None or _is_template(value):
            continue
        if not any(_TYPES[name](value) for name in allowed):
            yield (
                (field,),
                f"{kind} field {field!r} must be {' or '.join(_a(n) for n in allowed)},"
                f" got {_describe(value)}",
            )
            continue
        options = _ENUMS.get((kind, field))
        if options is not None and value not in options:
            yield ((field,), f"{kind} {field} must be one of {', '.join(sorted(options))}")
    if kind == "transfer":
        yield from _check_transfer(config)


def _check_transfer(config: Mapping[str, Any]) -> Iterator[Problem]:
    for side in ("source", "target"):
        end = config.get(side)
        if end is None:
            yield ((side,), "is required (a mapping with `type`)")
        elif isinstance(end, Mapping) and not isinstance(end.get("type", ""), str):
            yield ((side, "type"), "must be a string")


def check_keychain_entry(entry: Mapping[str, Any]) -> Iterator[Problem]:
    """Problems of one keychain entry (its name is checked by the caller)."""
    kind = entry.get("kind")
    if kind is None:
        kind = "credential" if "credential" in entry else entry.get("type")
    if kind is None:
        yield (("kind",), f"is required: one of {', '.join(sorted(KEYCHAIN_KINDS))}")
        return
    if not isinstance(kind, str) or kind not in KEYCHAIN_KINDS:
        yield (("kind",), f"expected one of {', '.join(sorted(KEYCHAIN_KINDS))}, got {kind!r}")
        return
    for field in KEYCHAIN_KINDS[kind]:
        if field not in entry:
            yield ((field,), f"is required for a {kind} keychain entry")
    if "map" in entry and not (isinstance(entry["map"], Mapping) or _is_template(entry["map"])):
        yield (("map",), f"must be a mapping of field: value, got {_describe(entry['map'])}")
    scope = entry.get("scope")
    if scope is not None and scope not in SCOPES:
        yield (("scope",), f"expected one of {', '.join(sorted(SCOPES))}, got {scope!r}")
    renew = entry.get("auto_renew")
    if renew is not None and not isinstance(renew, bool) and not _is_template(renew):
        yield (("auto_renew",), f"must be a boolean, got {_describe(renew)}")


def check_output(output: Any) -> Iterator[Problem]:
    """Problems of a step's (or tool's) `output` block: select, store, inline_max_bytes."""
    if not isinstance(output, Mapping):
        yield ((), f"expected a mapping, got {_describe(output)}")
        return
    for key in output:
        if key not in OUTPUT_KEYS:
            yield ((key,), f"unknown key {key!r}; expected one of {', '.join(sorted(OUTPUT_KEYS))}")
    for key in ("select", "output_select"):
        chosen = output.get(key)
        if chosen is not None and not (
            isinstance(chosen, list) and all(isinstance(name, str) for name in chosen)
        ):
            yield ((key,), "must be a list of field names")
    store = output.get("store")
    if store is not None:
        store_kind = store.get("kind", "auto") if isinstance(store, Mapping) else store
        if store_kind not in STORE_KINDS:
            yield (("store", "kind"), f"expected one of {', '.join(sorted(STORE_KINDS))}")
    limit = output.get("inline_max_bytes")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        yield (("inline_max_bytes",), "must be a non-negative integer")


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and is_template(value)


_TYPES: Mapping[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool) or v in {"true", "false"},
    "mapping": lambda v: isinstance(v, Mapping),
    "list": lambda v: isinstance(v, list),
}


def _a(name: str) -> str:
    return {"mapping": "a mapping", "list": "a list", "string": "a string"}.get(name, f"a {name}")


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
