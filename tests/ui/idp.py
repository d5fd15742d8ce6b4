"""A tiny OpenID provider on loopback for the browser sign-in tests.

It signs in whoever it is told to (no login page), and checks what a real
provider checks: the client, the redirect URI and the PKCE verifier against
the S256 challenge of the authorization request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str


@dataclass
class TinyIdp:
    client_id: str
    #: The claims of the user the next sign-in is for.
    user: dict[str, Any] = field(default_factory=lambda: {"sub": "alice"})
    grants: dict[str, Grant] = field(default_factory=dict)
    redeemed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key"
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/jwks":
                    self._send(200, {"keys": [idp.jwk()]})
                elif url.path == "/authorize":
                    idp.authorize(self, query)
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if urlparse(self.path).path == "/token":
                    status, body = idp.token(form)
                    self._send(status, body)
                else:
                    self._send(404, {"error": "not_found"})

            def redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> TinyIdp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def jwk(self) -> dict[str, Any]:
        raw: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {**raw, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def authorize(self, handler: Any, query: dict[str, str]) -> None:
        if query.get("client_id") != self.client_id or query.get("code_challenge_method") != "S256":
            self.refused.append("authorize: " + json.dumps(query))
            handler._send(400, {"error": "invalid_request"})
            return
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(
            query["client_id"], query["redirect_uri"], query["code_challenge"], query["nonce"]
        )
        back = urlencode({"code": code, "state": query.get("state", "")})
        handler.redirect(query["redirect_uri"] + "?" + back)

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = self.grants.pop(form.get("code", ""), None)
        if grant is None:
            self.refused.append("token: unknown code")
            return 400, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if digest.rstrip(b"=").decode() != grant.challenge:
            self.refused.append("token: PKCE verifier does not match")
            return 400, {"error": "invalid_grant", "error_description": "PKCE"}
        if (
            form.get("redirect_uri") != grant.redirect_uri
            or form.get("client_id") != grant.client_id
        ):
            self.refused.append("token: client or redirect_uri differ")
            return 400, {"error": "invalid_grant"}
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + 3600,
            "nonce": grant.nonce,
            **self.user,
        }
        id_token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        self.redeemed.append(str(self.user.get("sub")))
        return 200, {"id_token": id_token, "access_token": "opaque", "token_type": "Bearer"}
