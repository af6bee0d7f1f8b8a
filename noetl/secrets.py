"""Encryption of credential data at rest: AES-256-GCM with a key from the settings.

The key is `NOETL_ENCRYPTION_KEY` (32 bytes, urlsafe base64). Without it the server keeps a
generated key in `NOETL_HOME/encryption.key` (mode 0600); several server replicas must then be
given the same key explicitly.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from noetl.errors import ConfigError, NoetlError

log = logging.getLogger(__name__)
_NONCE = 12
_AAD = b"noetl.credential.v1"


class Cipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("NOETL_ENCRYPTION_KEY", "must decode to 32 bytes (urlsafe base64)")
        self._aead = AESGCM(key)

    @classmethod
    def from_text(cls, text: str) -> Cipher:
        try:
            return cls(base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4)))
        except (binascii.Error, ValueError):
            raise ConfigError("NOETL_ENCRYPTION_KEY", "is not urlsafe base64") from None

    @classmethod
    def from_settings(cls, key: str | None, home: Path) -> Cipher:
        if key:
            return cls.from_text(key)
        path = home / "encryption.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(new_key())
            log.warning("no NOETL_ENCRYPTION_KEY: generated %s (give replicas the same key)", path)
        return cls.from_text(path.read_text())

    def encrypt(self, data: Any) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, json.dumps(data).encode(), _AAD)

    def decrypt(self, blob: bytes) -> Any:
        try:
            plain = self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], _AAD)
        except InvalidTag:
            raise NoetlError("credential data cannot be decrypted with this key") from None
        return json.loads(plain)


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()
