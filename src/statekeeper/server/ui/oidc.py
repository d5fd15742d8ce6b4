"""Browser sign-in with OIDC: the authorization-code flow with PKCE.

``/ui/oidc/start`` makes a state, a nonce and a PKCE verifier, keeps them in
a short-lived signed cookie and sends the browser to the identity provider.
``/ui/oidc/callback`` checks the state, redeems the code with the verifier at
the token endpoint, verifies the ID token (the issuer's keys, the UI's client
ID, the nonce) and maps its claims to scopes with the same rules as CI
tokens. The session then holds that identity until the ID token or the
session expires, whichever is first.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from itsdangerous import BadSignature
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from statekeeper.errors import Unauthenticated
from statekeeper.events import Action, Event
from statekeeper.security.oidc import OidcBrowser
from statekeeper.server.ui.actions import safe_next
from statekeeper.server.ui.context import Page, open_page
from statekeeper.server.ui.session import OidcIdentity, Session

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

FLOW_COOKIE = "statekeeper_oidc"
#: Seconds a browser has to come back from the identity provider.
FLOW_SECONDS = 600


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _browser(ui: Page) -> OidcBrowser | None:
    oidc = ui.services.oidc
    return oidc.config.browser if oidc is not None else None


def _redirect_uri(request: Request) -> str:
    return str(request.url_for("oidc_callback"))


def _refused(ui: Page, message: str) -> Response:
    event = Event(
        action=Action.AUTHENTICATE,
        actor="oidc",
        outcome="unauthenticated",
        remote_addr=ui.remote,
        detail=f"web OIDC sign-in: {message}",
    )
    ui.services.events.emit(event)
    return ui.render("signin.html", 401, title="Sign in", next="/", failure=message)


@router.get("/ui/oidc/start")
def oidc_start(request: Request, next: str = "/") -> Response:
    ui = Page(request)
    browser = _browser(ui)
    if browser is None:
        return ui.render(
            "error.html", 404, title="Not found", message="OIDC sign-in is not configured."
        )
    flow = {
        "state": secrets.token_urlsafe(24),
        "nonce": secrets.token_urlsafe(24),
        "verifier": secrets.token_urlsafe(48),
        "next": safe_next(next),
    }
    query = urlencode(
        {
            "response_type": "code",
            "client_id": browser.client_id,
            "redirect_uri": _redirect_uri(request),
            "scope": browser.scope,
            "state": flow["state"],
            "nonce": flow["nonce"],
            "code_challenge": _challenge(flow["verifier"]),
            "code_challenge_method": "S256",
        }
    )
    sep = "&" if "?" in browser.authorization_endpoint else "?"
    response = RedirectResponse(browser.authorization_endpoint + sep + query, status_code=303)
    response.set_cookie(
        FLOW_COOKIE,
        ui.codec.serializer.dumps(flow, salt="statekeeper-oidc-flow"),
        max_age=FLOW_SECONDS,
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back
        secure=request.url.scheme == "https",
        path="/ui/oidc/",
    )
    return response


def _redeem(browser: OidcBrowser, code: str, verifier: str, redirect_uri: str) -> str:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": browser.client_id,
        "code_verifier": verifier,
    }
    if browser.client_secret:
        form["client_secret"] = browser.client_secret
    try:
        answer = httpx.post(browser.token_endpoint, data=form, timeout=30.0)
    except httpx.HTTPError as exc:
        raise Unauthenticated(
            f"the identity provider's token endpoint is unreachable: {exc}"
        ) from exc
    if answer.status_code != 200:
        raise Unauthenticated(
            f"the identity provider refused the code ({answer.status_code}): {answer.text[:200]}"
        )
    try:
        body: Any = answer.json()
    except ValueError as exc:
        raise Unauthenticated("the identity provider's token answer is not JSON") from exc
    id_token = body.get("id_token") if isinstance(body, dict) else None
    if not isinstance(id_token, str):
        raise Unauthenticated("the identity provider's token answer has no id_token")
    return id_token


@router.get("/ui/oidc/callback", name="oidc_callback")
async def oidc_callback(
    request: Request, code: str = "", state: str = "", error: str = ""
) -> Response:
    ui = await open_page(request)
    browser = _browser(ui)
    oidc = ui.services.oidc
    if browser is None or oidc is None:
        return ui.render(
            "error.html", 404, title="Not found", message="OIDC sign-in is not configured."
        )
    if error:
        return _refused(ui, f"the identity provider answered: {error}")
    try:
        flow = ui.codec.serializer.loads(
            request.cookies.get(FLOW_COOKIE, ""), salt="statekeeper-oidc-flow", max_age=FLOW_SECONDS
        )
    except BadSignature:
        return _refused(ui, "this sign-in was not started here or took too long; start again")
    if not isinstance(flow, dict) or not secrets.compare_digest(
        str(flow.get("state")).encode(), state.encode()
    ):
        return _refused(ui, "the sign-in's state does not match; start again")
    try:
        id_token = await run_in_threadpool(
            _redeem, browser, code, str(flow["verifier"]), _redirect_uri(request)
        )
        caller = await run_in_threadpool(
            oidc.verify_browser, id_token, str(flow["nonce"]), ui.remote
        )
        expires = oidc.expiry(id_token)
    except Unauthenticated as exc:
        return _refused(ui, exc.message)
    until = min(expires, time.time() + ui.codec.max_age)
    identity = OidcIdentity(caller.actor, caller.scopes or (), dict(caller.claims), until)
    session = Session(csrf=Session.fresh().csrf, oidc=identity)
    response = RedirectResponse(safe_next(str(flow.get("next", "/"))), status_code=303)
    ui.codec.store(response, request, session)
    response.delete_cookie(FLOW_COOKIE, path="/ui/oidc/")
    return response
