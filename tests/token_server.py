"""A small OAuth2 token endpoint on loopback, for the keychain's token kinds.

POST /token with `grant_type=client_credentials` (client_id/client_secret checked against the
server's) answers `{access_token, token_type, expires_in}`; with the JWT-bearer grant it
verifies the assertion's RS256 signature against the registered public key and answers
`{id_token}` (when the JWT asks for a `target_audience`) or `{access_token}`. Every request is
recorded, so tests can count how often a token was fetched.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class TokenServer:
    url: str
    client_id: str
    client_secret: str
    public_key: rsa.RSAPublicKey | None = None
    expires_in: int = 3600
    requests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def answer(self, form: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.requests.append({"form": form, "headers": headers})
        count = len(self.requests)
        grant = form.get("grant_type")
        if grant == "client_credentials":
            if (form.get("client_id"), form.get("client_secret")) != (
                self.client_id,
                self.client_secret,
            ):
                return 401, {"error": "invalid_client"}
            token = f"access-{count}-{self.client_id}"
            return 200, {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.expires_in,
            }
        if grant == JWT_GRANT and self.public_key is not None:
            header, claims, signature = form.get("assertion", "..").split(".")
            try:
                self.public_key.verify(
                    _unb64(signature),
                    f"{header}.{claims}".encode(),
                    padding.PKCS1v15(),
                    hashes.SHA256(),
                )
            except Exception:
                return 401, {"error": "invalid_grant", "error_description": "bad signature"}
            body = json.loads(_unb64(claims))
            if body.get("aud") != self.token_url:
                return 401, {"error": "invalid_grant", "error_description": "wrong aud"}
            if "target_audience" in body:
                return 200, {"id_token": f"id-{count}-for-{body['target_audience']}"}
            return 200, {"access_token": f"sa-access-{count}", "expires_in": self.expires_in}
        return 400, {"error": "unsupported_grant_type"}


@contextmanager
def token_server(
    client_id: str = "cid",
    client_secret: str = "csecret",
    public_key: rsa.RSAPublicKey | None = None,
) -> Iterator[TokenServer]:
    state = TokenServer("", client_id, client_secret, public_key)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            status, body = (
                state.answer(form, dict(self.headers))
                if self.path == "/token"
                else (404, {"error": "not found"})
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
