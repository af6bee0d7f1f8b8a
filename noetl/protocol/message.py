"""The NATS message: a lightweight reference to a `command.issued` event, nothing more."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

FIELDS = ("execution_id", "event_id", "command_id", "step", "server_url")


@dataclass(frozen=True)
class CommandMessage:
    execution_id: int
    event_id: int
    command_id: str
    step: str
    server_url: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> CommandMessage:
        """Parse a message body; raises ValueError when it is not exactly the five fields."""
        try:
            body: Any = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(body, dict) or set(body) != set(FIELDS):
            raise ValueError(f"expected exactly the keys {', '.join(FIELDS)}")
        return cls(
            execution_id=int(body["execution_id"]),
            event_id=int(body["event_id"]),
            command_id=str(body["command_id"]),
            step=str(body["step"]),
            server_url=str(body["server_url"]),
        )
