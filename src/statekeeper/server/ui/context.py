"""What every UI page needs: the services, the session, the caller, and rendering.

Pages render HTML from Jinja2 templates with autoescaping; an error from the
services becomes an error page with the same status the API would answer, and
a state the caller has no grant on is answered exactly like a missing one.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from statekeeper.app import Services
from statekeeper.errors import (
    Forbidden,
    InvalidStateName,
    RateLimited,
    StatekeeperError,
    StateNotFound,
    VersionNotFound,
)
from statekeeper.escapes import shown
from statekeeper.events import Action
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, require
from statekeeper.security.signouts import session_id
from statekeeper.server.auth import Authenticator
from statekeeper.server.limits import RateLimiter
from statekeeper.server.ui.session import Session, SessionCodec, caller_or_none
from statekeeper.settings import format_size
from statekeeper.state.operator import Operator
from statekeeper.terraform.names import StateName
from statekeeper.times import format_age, format_duration, format_rfc3339, parse_rfc3339

__all__ = ["PAGE", "STATIC", "Page", "open_page", "templates"]

HERE = Path(__file__).parent
_CODEC_LOCK = threading.Lock()
#: No script, no frames, nothing from elsewhere: the pages need none of it.
_CSP = "default-src 'self'; script-src 'none'; frame-ancestors 'none'; form-action 'self'"
STATIC = HERE / "static"
#: The methods every page answers: HEAD as GET, same status and headers, no body
#: (Starlette sends none), for link checkers and load balancers' probes.
PAGE = ["GET", "HEAD"]


def _age(seconds: float | None) -> str:
    return "unknown" if seconds is None else format_age(seconds)


def _size(n: int | None) -> str:
    return "" if n is None else format_size(n)


def _when(value: str | datetime | None) -> str:
    """RFC 3339 shown as ``2026-01-02 03:04:05Z`` (the server's clock, UTC)."""
    if value is None:
        return ""
    when = parse_rfc3339(value) if isinstance(value, str) else value
    return format_rfc3339(when).replace("T", " ")[:19] + "Z"


def _period(duration: timedelta) -> str:
    """A configured period as people write it (``30 days``, ``36 hours``), not
    ``timedelta``'s ``30 days, 0:00:00``; else the duration as the config writes it."""
    seconds = int(duration.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return format_duration(duration)


def _json(value: Any) -> str:
    """A value as JSON text as its writer wrote it: ``<`` stays ``<`` (Jinja's ``tojson``
    writes ``\u003c``, for script blocks, which the pages have none of); autoescaping
    makes it text in the page."""
    return json.dumps(value, ensure_ascii=False)


def _shown(value: Any) -> Any:
    """What every expression a page prints goes through (Jinja's ``finalize``): text as
    :func:`~statekeeper.escapes.shown` shows it, so that no field a caller wrote (a
    lock's Who written straight into a DynamoDB item, a resource's attribute) can
    reorder a cell with U+202E. Markup is a macro's output or :func:`_exact`'s, its
    own expressions already through here."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return shown(value)
    return value


def _exact(value: Any) -> Markup:
    """``value`` exactly as it is, for a form field that sends it back (a lock ID to
    unlock by): escaped for HTML, and kept from :func:`_shown`."""
    return escape(value)


templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.finalize = _shown
templates.env.filters["exact"] = _exact
templates.env.filters["age"] = _age
templates.env.filters["size"] = _size
templates.env.filters["when"] = _when
templates.env.filters["period"] = _period
templates.env.filters["json"] = _json
templates.env.filters["path"] = lambda name: quote(str(name), safe="/:")
templates.env.globals["urlencode"] = urlencode


class Page:
    """One UI request: its session (made on first visit) and its caller."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.services: Services = request.app.state.services
        self.authenticator: Authenticator = request.state.authenticator
        with _CODEC_LOCK:  # one key per app, even when the first pages arrive together
            codec: SessionCodec | None = getattr(request.app.state, "ui_sessions", None)
            if codec is None:
                s = self.services.settings
                codec = SessionCodec(s.session_secret, s.session_hours * 3600)
                request.app.state.ui_sessions = codec
        self.codec = codec
        loaded = codec.load(request)
        if loaded is not None and self._signed_out(loaded):
            loaded = None  # a copy of a cookie whose session was signed out: none
        self.fresh = loaded is None
        self.session = loaded or Session.fresh()
        remote = request.client.host if request.client else None
        self.remote = remote
        self.caller: Caller | None = caller_or_none(self.authenticator, loaded, remote)

    def _signed_out(self, session: Session) -> bool:
        """Whether ``session`` was signed out. Asked only of a signed-in session (a
        visitor's or the anonymous mode's has no identity to end)."""
        if self.authenticator.anonymous or (session.token is None and session.oidc is None):
            return False
        return self.services.signouts.ended(session_id(session.csrf))

    @property
    def operator(self) -> Operator:
        s = self.services
        return Operator(
            s,
            workspace_key_prefix=s.settings.workspace_key_prefix,
            index=s.inventory,
        )

    def who(self) -> Caller:
        """The caller; pages call this only after :meth:`gate` said None."""
        assert self.caller is not None
        return self.caller

    def may(self, name: StateName | None, permission: Permission) -> bool:
        return self.caller is not None and self.services.policy.allows(
            self.caller, name, permission
        )

    def refuse_unless(
        self, name: StateName, permission: Permission, action: Action, what: str
    ) -> Response | None:
        """What a confirmation page answers a caller who could not submit it: a 403
        naming the permission needed (a 404 for a state it may not see at all, as for
        a missing one); None when the caller may ``what`` ``name``. A refusal is
        recorded as the refused ``action``, as the API records one: opening the page is
        the attempt."""
        caller = self.who()
        try:
            with self.services.events.event(action, caller, name, record_success=False):
                require(self.services.policy, caller, name, permission, what)
        except Forbidden as exc:
            if not self.may(name, Permission.OUTPUTS):
                return self.error(exc, state=str(name))
            return self.render("error.html", 403, title="Forbidden", message=exc.message)
        return None

    def _sees(self, state: str) -> bool:
        """True when the caller holds a grant on ``state`` (``outputs`` or more)."""
        try:
            return self.may(StateName(state), Permission.OUTPUTS)
        except InvalidStateName:
            return False

    def gate(self) -> Response | None:
        """What to answer instead of the page: the sign-in page for a browser without a
        session (never a 401), or 429 for a caller over its rate, as the API would."""
        if self.caller is not None:
            limiter: RateLimiter | None = getattr(self.request.state, "limiter", None)
            if limiter is None or self.caller.scopes is None:
                return None
            try:
                limiter.check(self.caller.actor)
            except RateLimited as exc:
                response = self.render(
                    "error.html", 429, title="Too many requests", message=exc.message
                )
                response.headers["Retry-After"] = str(exc.retry_after)
                return response
            return None
        target = self.request.url.path
        if self.request.url.query:
            target += "?" + self.request.url.query
        return self.keep(
            RedirectResponse("/ui/signin?" + urlencode({"next": target}), status_code=303)
        )

    def keep(self, response: Response) -> Response:
        """Set the session cookie on a first visit; pages are never cached."""
        if self.fresh:
            self.codec.store(response, self.request, self.session)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        response = templates.TemplateResponse(
            self.request,
            template,
            {
                "caller": self.caller,
                "anonymous_mode": self.authenticator.anonymous,
                "csrf": self.session.csrf,
                "is_admin": self.may(None, Permission.ADMIN),
                "oidc_browser": self.services.oidc is not None
                and self.services.oidc.config.browser is not None,
                **values,
            },
            status_code=status,
        )
        return self.keep(response)

    def error(self, exc: StatekeeperError, *, state: str | None = None) -> Response:
        """An error page; a state one may not see is not found, as if it did not exist.
        A refusal on a state one may see (an older version asked by an ``outputs``
        caller) says what it needs."""
        hidden = isinstance(exc, StateNotFound) or (
            isinstance(exc, Forbidden) and state is not None and not self._sees(state)
        )
        if state is not None and hidden:
            return self.render(
                "error.html",
                404,
                title="Not found",
                message=f"There is no state named {state} that you may see.",
            )
        if isinstance(exc, VersionNotFound):
            return self.render("error.html", 404, title="Not found", message=exc.message)
        # The code (invalid_state_name) as a title people read: "Invalid state name".
        title = exc.code.replace("_", " ").capitalize()
        return self.render("error.html", exc.status, title=title, message=exc.message)


async def open_page(request: Request) -> Page:
    """The :class:`Page` of a request handled on the event loop (the forms' POSTs):
    opening it may read the store (the session's token, whether it was signed out)."""
    return await run_in_threadpool(Page, request)
