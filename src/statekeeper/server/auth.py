"""Who is calling: API tokens and OIDC JWTs, from Basic or Bearer credentials.

Terraform sends ``username``/``password`` as HTTP Basic: the username is the
token name and the password its secret, or (for CI) any username and an OIDC
JWT as the password. The JSON API also takes ``Authorization: Bearer``.

Every request but the health check and the API description goes through
:class:`AuthMiddleware`. It answers 401 (with ``WWW-Authenticate``) when
credentials are missing or wrong, records the denial in the audit trail, and
otherwise puts the :class:`~statekeeper.security.caller.Caller`, with its grants, where
the routes find it; the services then answer 403 where a grant is missing.
A server with no tokens and no OIDC configured, bound to loopback only, lets
anonymous callers do everything (``statekeeper serve`` refuses any other
address in that case).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from statekeeper.app import Services
from statekeeper.errors import BadRequest, RateLimited, StatekeeperError, Unauthenticated
from statekeeper.security.caller import ANONYMOUS, Caller
from statekeeper.security.oidc import looks_like_jwt
from statekeeper.security.tokens import TokenRecord, hash_secret
from statekeeper.server.crosssite import cross_site_write
from statekeeper.server.denials import Denials
from statekeeper.server.errors import error_response
from statekeeper.server.limits import RateLimiter, rate_limited_response
from statekeeper.server.loopback import foreign_request
from statekeeper.times import format_rfc3339

__all__ = [
    "PUBLIC_PATHS",
    "AuthMiddleware",
    "Authenticator",
    "auth_configured",
    "is_ui_path",
    "security_summary",
]

PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/api/v1/openapi.json", "/api/docs", "/favicon.ico"}
)


def is_ui_path(path: str) -> bool:
    """The web UI's pages, which sign browsers in with a session cookie instead:
    a Basic challenge there would make Chromium abort the navigation."""
    return path == "/" or path.startswith("/ui/")


_HOW = (
    "send an API token as the backend's username (the token name) and password "
    "(the secret), or 'Authorization: Bearer <token or OIDC JWT>'"
)


def auth_configured(services: Services) -> bool:
    """True when any way to authenticate is configured (tokens, a tokens file, OIDC)."""
    s = services.settings
    if s.tokens_file is not None or services.oidc is not None:
        return True
    tokens = services.tokens.store
    return tokens is not None and not tokens.empty()


class Authenticator:
    """Turns an ``Authorization`` header into a Caller, or raises Unauthenticated."""

    def __init__(self, services: Services, *, allow_anonymous: bool) -> None:
        self.services = services
        self.allow_anonymous = allow_anonymous
        self._label_key = os.urandom(32)

    @property
    def anonymous(self) -> bool:
        """True when callers need no credentials (loopback, no access control configured)."""
        return self.allow_anonymous and not auth_configured(self.services)

    def authenticate(self, header: str | None, remote_addr: str | None) -> Caller:
        if self.anonymous:
            return Caller(actor=ANONYMOUS, remote_addr=remote_addr)
        if not header:
            raise Unauthenticated("this server requires credentials: " + _HOW)
        scheme, _, value = header.strip().partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "basic":
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise Unauthenticated("the Basic credentials are not base64; " + _HOW) from exc
            try:
                decoded = raw.decode()
            except UnicodeDecodeError as exc:
                raise Unauthenticated("the Basic credentials are not UTF-8; " + _HOW) from exc
            username, sep, secret = decoded.partition(":")
            if not sep or not secret:
                raise Unauthenticated("the Basic credentials carry no password; " + _HOW)
            if looks_like_jwt(secret):
                return self._oidc(secret, remote_addr)
            return self._named_token(username, secret, remote_addr)
        if scheme == "bearer" and value:
            if looks_like_jwt(value):
                return self._oidc(value, remote_addr)
            return self._bearer_token(value, remote_addr)
        # The "scheme" may be a bare secret (``Authorization: skt_…``): never echoed.
        raise Unauthenticated("the Authorization header is neither Basic nor Bearer; " + _HOW)

    def _oidc(self, token: str, remote_addr: str | None) -> Caller:
        if self.services.oidc is None:
            raise Unauthenticated("OIDC is not configured on this server; use an API token")
        return self.services.oidc.verify(token, remote_addr)

    def sign_in(self, name: str, secret: str, remote_addr: str | None) -> Caller:
        """The caller an API token's name and secret stand for (the web UI's sign-in)."""
        return self._named_token(name, secret, remote_addr)

    def resume(self, name: str, digest: str, remote_addr: str | None) -> Caller:
        """The caller of a signed-in session, while its token still exists unchanged:
        ``digest`` is the start of the token's SHA-256 when the session began, so a
        revoked or re-issued token ends its sessions."""
        tokens = self.services.tokens.store
        record = tokens.get(name) if tokens is not None and name else None
        if record is None or not hmac.compare_digest(record.sha256[: len(digest)], digest):
            raise Unauthenticated(f"the token {name!r} was revoked or replaced; sign in again")
        return self._checked(record, remote_addr)

    def _named_token(self, name: str, secret: str, remote_addr: str | None) -> Caller:
        tokens = self.services.tokens.store
        record = tokens.get(name) if tokens is not None and name else None
        if record is None or not record.matches(secret):
            # The name is not repeated: a secret typed as the username would be.
            raise Unauthenticated(
                "no token has that name, or its secret does not match; check the "
                "backend's username (the token name) and password (the secret)"
            )
        return self._checked(record, remote_addr)

    def _checked(self, record: TokenRecord, remote_addr: str | None) -> Caller:
        if record.expired():
            assert record.expires is not None
            raise Unauthenticated(
                f"the token {record.name!r} expired at {format_rfc3339(record.expires)}; "
                "create a new one with 'statekeeper token create'"
            )
        return Caller(actor=record.name, remote_addr=remote_addr, scopes=record.scopes)

    def _bearer_token(self, secret: str, remote_addr: str | None) -> Caller:
        tokens = self.services.tokens.store
        record = tokens.find(hash_secret(secret)) if tokens is not None else None
        if record is None or not record.matches(secret):
            raise Unauthenticated("the Bearer token is not known to this server; " + _HOW)
        return self._named_token(record.name, secret, remote_addr)

    def label(self, header: str | None) -> str:
        """Who a refused request claims to be, for the audit trail and the log.

        Credentials are never recorded, right, wrong or mistyped: a secret sent
        as the Basic username is as secret as one sent as the password. So the
        label is a token *name* this server knows (names are not secrets),
        ``anonymous`` without credentials, and otherwise ``unknown:`` and an
        HMAC of the header under a key that lives only in this process: repeated
        attempts share a label, and nothing of the header can be recovered.
        """
        if not header:
            return ANONYMOUS
        scheme, _, value = header.strip().partition(" ")
        tokens = self.services.tokens.store
        if scheme.lower() == "basic" and tokens is not None:
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, ValueError):
                decoded = ""
            user = decoded.partition(":")[0]
            try:
                known = bool(user) and tokens.get(user) is not None
            except Unauthenticated:
                known = False  # no name is known while the tokens file cannot be read
            if known:
                return user
        digest = hmac.new(self._label_key, header.encode("utf-8", "surrogateescape"), "sha256")
        return "unknown:" + digest.hexdigest()[:12]


class AuthMiddleware:
    """Authenticates every request, applies the per-caller rate, audits denials."""

    def __init__(
        self,
        app: ASGIApp,
        services: Services,
        denials: Denials,
        allow_anonymous: bool = True,
    ) -> None:
        self.app = app
        self.services = services
        self.denials = denials
        self.authenticator = Authenticator(services, allow_anonymous=allow_anonymous)
        s = services.settings
        self.limiter = RateLimiter(s.rate_limit, s.rate_burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        refused: StatekeeperError | None = None
        if self.authenticator.anonymous:
            refused = foreign_request(scope["headers"])
        if refused is None and not is_ui_path(scope["path"]):
            # The UI's forms are checked by their CSRF token and by this, with a page of
            # their own (server/ui/actions.py).
            refused = cross_site_write(scope["method"], scope["headers"])
        if refused is not None:
            await error_response(refused)(scope, receive, send)
            return
        if is_ui_path(scope["path"]):
            # The UI's routes resolve the caller from their session cookie with this,
            # and apply the same per-caller rate.
            state = scope.setdefault("state", {})
            state["authenticator"] = self.authenticator
            state["limiter"] = self.limiter
            await self.app(scope, receive, send)
            return
        given = [value for key, value in scope["headers"] if key == b"authorization"]
        if len(given) > 1:
            # Proxies and frameworks disagree on which of two wins: refuse both.
            refused = BadRequest(
                f"the request carries {len(given)} Authorization headers; send exactly one"
            )
            await error_response(refused)(scope, receive, send)
            return
        header = given[0].decode("latin-1") if given else None
        client = scope.get("client")
        remote = client[0] if client else None
        try:
            if self.services.oidc is None:
                # Tokens only: a local lookup (an SQLite row or the tokens file) takes
                # microseconds, less than the hop to a worker thread and back.
                caller = self.authenticator.authenticate(header, remote)
            else:
                # An OIDC token may need the issuer's keys, fetched over the network.
                caller = await run_in_threadpool(self.authenticator.authenticate, header, remote)
        except Unauthenticated as exc:
            # The label and the request are the facts; no Caller exists yet.
            label = await run_in_threadpool(self.authenticator.label, header)
            limited = await run_in_threadpool(
                self.denials.refuse,
                remote,
                label,
                f"{scope['method']} {scope['path']}",
                exc.message,
            )
            if limited is not None:
                await rate_limited_response(limited)(scope, receive, send)
                return
            await error_response(exc)(scope, receive, send)
            return
        if caller.scopes is not None:
            try:
                self.limiter.check(caller.actor)
            except RateLimited as exc:
                await rate_limited_response(exc)(scope, receive, send)
                return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


def security_summary(services: Services, secured: bool) -> list[str]:
    """The lines ``serve`` prints at start about access control, TLS and encryption."""
    from rich.markup import escape

    s = services.settings
    lines: list[str] = []
    if secured:
        ways = []
        if s.tokens_file is not None:
            ways.append(f"API tokens from {escape(str(s.tokens_file))}")
        elif services.tokens.store is not None and not services.tokens.store.empty():
            ways.append("API tokens")
        if services.oidc is not None:
            ways.append(f"OIDC ({escape(services.oidc.config.issuer)})")
        lines.append("access control: " + ", ".join(ways or ["on (no credentials yet)"]))
        if s.tls_cert is None:
            lines.append(
                "[yellow]warning:[/] no TLS: tokens cross the network in clear text unless a "
                "TLS-terminating proxy is in front (--tls-cert/--tls-key)"
            )
    else:
        lines.append(
            "[yellow]warning:[/] no access control is configured: anyone on this machine "
            "may read, write and force-unlock states (serving on loopback only)"
        )
    kid = services.keys.current_kid
    if kid is not None:
        lines.append(
            f"encryption at rest: on (master key {kid}); a state stored "
            'encrypted is unreadable by Terraform\'s own backend "s3"'
        )
    else:
        lines.append("encryption at rest: off (set STATEKEEPER_MASTER_KEY to turn it on)")
    return lines
