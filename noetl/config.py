"""Settings, read once from the environment and passed down.

No other module reads a setting from `os.environ` (tools copy the environment for the
processes they start: shell commands, python children). A missing or invalid value raises
`ConfigError` naming the variable. The table below is the source of the README's
configuration table.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from noetl.errors import ConfigError
from noetl.ids import MAX_NODE


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        parts = [value] if "http" in schemes else value.split(",")  # a NATS cluster: several
        for part in parts:
            if urlparse(part.strip()).scheme not in schemes:
                raise ValueError(
                    f"expected a URL starting with {' or '.join(s + '://' for s in schemes)}"
                )
        return value.rstrip("/") if "http" in schemes else value

    return parse


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("expected a positive integer")
    return number


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _int_at_least_0(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("expected an integer >= 0")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError("expected a port number 0..65535")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("expected a positive number of seconds")
    return number


def _node_id(value: str) -> int:
    number = int(value)
    if not 0 <= number <= MAX_NODE:
        raise ValueError(f"expected an integer 0..{MAX_NODE}")
    return number


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda value: parse(value) if value else None


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


def _env(name: str, parse: Callable[[str], Any], doc: str) -> Any:
    return field(metadata={"env": name, "parse": parse, "doc": doc})


_OPTIONAL = {
    "database_url",
    "nats_url",
    "encryption_key",
    "api_token",
    "worker_token",
    "python_processes",
}


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    database_url: str | None = _env(
        "NOETL_DATABASE_URL",
        _optional(_url(("postgresql", "postgres"))),
        "PostgreSQL URL. Unset: `noetl run` starts an embedded PostgreSQL.",
    )
    nats_url: str | None = _env(
        "NATS_URL",
        _optional(_url(("nats", "tls"))),
        "NATS URL (several, comma-separated, for a cluster), may carry user:password."
        " Unset: `noetl run` starts an embedded nats-server.",
    )
    server_url: str = _env(
        "SERVER_API_URL",
        _url(("http", "https")),
        "Worker: where the server is. Server: the server_url it puts in NATS messages.",
    )
    server_host: str = _env("NOETL_SERVER_HOST", str, "Address the server binds.")
    server_port: int = _env("NOETL_SERVER_PORT", _port, "Port the server binds.")
    node_id: int = _env(
        "NOETL_NODE_ID", _node_id, "Snowflake node id (0..1023), unique per server."
    )
    worker_id: str = _env("NOETL_WORKER_ID", str, "Worker name in the registry and in events.")
    worker_concurrency: int = _env(
        "NOETL_WORKER_CONCURRENCY", _positive_int, "Commands one worker runs at once."
    )
    relay_interval: float = _env(
        "NOETL_RELAY_INTERVAL", _positive_float, "Seconds between relay/reaper passes."
    )
    schedule_interval: float = _env(
        "NOETL_SCHEDULE_INTERVAL", _positive_float, "Seconds between passes of the scheduler."
    )
    schedule_grace: float = _env(
        "NOETL_SCHEDULE_GRACE",
        _positive_float,
        "A schedule tick later than this many seconds was missed (skipped unless catch_up).",
    )
    relay_after: float = _env(
        "NOETL_RELAY_AFTER", _positive_float, "Republish a PENDING command after this many seconds."
    )
    lease_seconds: float = _env(
        "NOETL_LEASE_SECONDS", _positive_float, "A claim's lease; workers renew it while running."
    )
    heartbeat_seconds: float = _env(
        "NOETL_HEARTBEAT_SECONDS", _positive_float, "Seconds between a worker's heartbeats."
    )
    worker_dead_after: float = _env(
        "NOETL_WORKER_DEAD_AFTER",
        _positive_float,
        "A worker silent this long is dead: the relay releases its claims at once.",
    )
    max_attempts: int = _env(
        "NOETL_MAX_ATTEMPTS", _positive_int, "Claims of one command before it fails as worker_lost."
    )
    continuation: bool = _env(
        "NOETL_CONTINUATION",
        _bool,
        "Hand each reporting worker one command its report's decision issues, claimed in the"
        " same transaction.",
    )
    max_step_runs: int = _env(
        "NOETL_MAX_STEP_RUNS",
        _positive_int,
        "Step runs one execution may make before it fails (playbook: executor.spec.max_step_runs).",
    )
    max_payload_bytes: int = _env(
        "NOETL_MAX_PAYLOAD_BYTES", _positive_int, "Largest request body or tool result accepted."
    )
    max_response_bytes: int = _env(
        "NOETL_MAX_RESPONSE_BYTES",
        _positive_int,
        "Largest HTTP response body an http step reads; past it the step fails.",
    )
    nats_replicas: int = _env(
        "NOETL_NATS_REPLICAS",
        _positive_int,
        "Copies of the stream and consumer in a JetStream cluster (3 for a 3-node cluster).",
    )
    stream: str = _env("NOETL_NATS_STREAM", str, "JetStream stream name.")
    subject: str = _env("NOETL_NATS_SUBJECT", str, "Subject commands are published on.")
    consumer: str = _env("NOETL_NATS_CONSUMER", str, "Durable pull consumer of the worker pool.")
    home: Path = _env("NOETL_HOME", Path, "Data folder of the embedded PostgreSQL and NATS.")  # noqa: RUF009
    log_level: str = _env("NOETL_LOG_LEVEL", _log_level, "DEBUG, INFO, WARNING or ERROR.")
    python_processes: int | None = _env(
        "NOETL_PYTHON_PROCESSES",
        _optional(_positive_int),
        "Warm processes for isolated python steps. Unset: the worker concurrency.",
    )
    python_memory_mb: int = _env(
        "NOETL_PYTHON_MEMORY_MB",
        _int_at_least_0,
        "Address-space limit per python process (0: none).",
    )
    encryption_key: str | None = _env(
        "NOETL_ENCRYPTION_KEY",
        _optional(str),
        "Key for credential data (32 bytes, urlsafe base64). Unset: a key file in NOETL_HOME.",
    )
    api_token: str | None = _env(
        "NOETL_API_TOKEN", _optional(str), "Bearer token for the whole API. Unset: no auth."
    )
    worker_token: str | None = _env(
        "NOETL_WORKER_TOKEN",
        _optional(str),
        "Bearer token for the worker routes (claim, lease, events, credentials).",
    )

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {
            "database_url": None,
            "nats_url": None,
            "server_url": "http://127.0.0.1:8082",
            "server_host": "127.0.0.1",
            "server_port": 8082,
            "node_id": random.randrange(MAX_NODE + 1),
            "worker_id": _default_worker_id(),
            "worker_concurrency": 8,
            "relay_interval": 1.0,
            "relay_after": 5.0,
            "schedule_interval": 1.0,
            "schedule_grace": 60.0,
            "lease_seconds": 30.0,
            "heartbeat_seconds": 2.0,
            "worker_dead_after": 6.0,
            "max_attempts": 3,
            "continuation": True,
            "max_step_runs": 10_000,
            "max_payload_bytes": 4 * 1024 * 1024,
            "max_response_bytes": 256 * 1024 * 1024,
            "nats_replicas": 1,
            "stream": "NOETL_COMMANDS",
            "subject": "noetl.commands",
            "consumer": "noetl-worker-pool",
            "home": Path.home() / ".noetl",
            "log_level": "INFO",
            "python_processes": None,
            "python_memory_mb": 1024,
            "encryption_key": None,
            "api_token": None,
            "worker_token": None,
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from `env` (default: the process environment), once."""
        source = os.environ if env is None else env
        values = cls.defaults()
        for f in fields(cls):
            name = f.metadata["env"]
            raw = source.get(name)
            if raw is None or (raw == "" and f.name not in _OPTIONAL):
                continue
            try:
                values[f.name] = f.metadata["parse"](raw.strip())
            except ValueError as exc:
                raise ConfigError(name, f"invalid value {raw!r}: {exc}") from None
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @property
    def embeds(self) -> bool:
        """PostgreSQL or NATS is not configured: `noetl run`, `test` and `ui` start them (in
        NOETL_HOME)."""
        return not (self.database_url and self.nats_url)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("NOETL_DATABASE_URL", "is required (a postgresql:// URL)")
        return self.database_url

    def require_nats_url(self) -> str:
        if not self.nats_url:
            raise ConfigError("NATS_URL", "is required (a nats:// URL)")
        return self.nats_url


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting: the README's configuration table."""
    defaults = Settings.defaults()
    return [(f.metadata["env"], str(defaults[f.name]), f.metadata["doc"]) for f in fields(Settings)]
