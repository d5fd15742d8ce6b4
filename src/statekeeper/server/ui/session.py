"""Browser sessions: a signed cookie, the caller behind it, and CSRF tokens.

Signing in with an API token (name + secret) stores the token's *name* and the
start of its SHA-256 in a cookie signed with ``session_secret``; the secret is
never kept. Each request re-reads the token, so a revoked, replaced or expired
token ends its sessions at once. The cookie is HttpOnly, SameSite=Lax, Secure
when the request came over TLS, and expires after ``session_hours``.

Every visitor's session also holds a random CSRF token, which every form
carries in a hidden field and every POST must echo (a cross-site form cannot
read it). In anonymous loopback mode there is no sign-in, but the CSRF token
is still required.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from statekeeper.errors import Unauthenticated
from statekeeper.security.caller import Caller
from statekeeper.server.auth import Authenticator

__all__ = [
    "COOKIE",
    "OidcIdentity",
    "Session",
    "SessionCodec",
    "caller_or_none",
    "check_csrf",
    "read_form",
]

COOKIE = "statekeeper_session"
#: Characters of the token's SHA-256 a session remembers (enough to notice a re-issue).
DIGEST_CHARS = 16
#: A form larger than this is not one of ours.
MAX_FORM = 64 * 1024


@dataclass(frozen=True)
class OidcIdentity:
    """Who an OIDC sign-in established; it holds until ``until`` (UNIX time), the ID
    token's expiry or the session's, whichever is first."""

    actor: str
    scopes: tuple[str, ...]
    claims: dict[str, str]
    until: float

    def to_json(self) -> dict[str, object]:
        return {"a": self.actor, "s": list(self.scopes), "c": self.claims, "u": self.until}

    @classmethod
    def from_json(cls, raw: object) -> OidcIdentity | None:
        if not isinstance(raw, dict):
            return None
        try:
            return cls(
                str(raw["a"]),
                tuple(str(s) for s in raw["s"]),
                {str(k): str(v) for k, v in dict(raw["c"]).items()},
                float(raw["u"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Session:
    csrf: str
    token: str | None = None
    digest: str | None = None
    oidc: OidcIdentity | None = None

    @classmethod
    def fresh(cls) -> Session:
        return cls(csrf=secrets.token_urlsafe(24))


class SessionCodec:
    """Signs and reads session cookies; ``max_age`` in seconds."""

    def __init__(self, secret: str | None, max_age: float) -> None:
        # Without a configured secret, sessions live as long as this process.
        self.serializer = URLSafeTimedSerializer(
            secret or secrets.token_urlsafe(32), salt="statekeeper-ui-session"
        )
        self.max_age = int(max_age)

    def load(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self.serializer.loads(raw, max_age=self.max_age)
        except BadSignature:
            return None  # tampered, from another key, or expired: a fresh session
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return None
        token, digest = data.get("t"), data.get("d")
        return Session(
            csrf=data["c"],
            token=token if isinstance(token, str) else None,
            digest=digest if isinstance(digest, str) else None,
            oidc=OidcIdentity.from_json(data.get("o")),
        )

    def store(self, response: Response, request: Request, session: Session) -> None:
        value = self.serializer.dumps(
            {
                "c": session.csrf,
                "t": session.token,
                "d": session.digest,
                "o": session.oidc.to_json() if session.oidc else None,
            }
        )
        response.set_cookie(
            COOKIE,
            value,
            max_age=int(self.max_age),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/")


def caller_or_none(
    authenticator: Authenticator, session: Session | None, remote: str | None
) -> Caller | None:
    """Who the browser is: anonymous in anonymous mode, the session's token, or nobody."""
    if authenticator.anonymous:
        return Caller(actor="anonymous", remote_addr=remote)
    if session is not None and session.oidc is not None:
        who = session.oidc
        if time.time() >= who.until:
            return None
        return Caller(actor=who.actor, remote_addr=remote, claims=who.claims, scopes=who.scopes)
    if session is None or session.token is None or session.digest is None:
        return None
    try:
        return authenticator.resume(session.token, session.digest, remote)
    except Unauthenticated:
        return None


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body as a dict (first value of each field)."""
    body = await request.body()
    if len(body) > MAX_FORM:
        return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def check_csrf(session: Session | None, form: dict[str, str]) -> bool:
    """True when the form echoes the session's CSRF token."""
    sent = form.get("csrf", "")
    # As bytes: compare_digest raises on a str with a non-ASCII character, which a
    # forged field may hold (a refusal, not a failed request).
    return (
        session is not None
        and bool(sent)
        and hmac.compare_digest(sent.encode(), session.csrf.encode())
    )
