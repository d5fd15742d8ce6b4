"""The one place where server-side exceptions become HTTP responses.

Client faults are 4xx with ``{"error": code, "message": …}``; server faults
5xx with the same shape and no traceback. Lock conflicts on Terraform's
routes carry the holder's LockInfo fields at the top level (Terraform parses
them and prints "Lock Info"), with ``error`` and ``message`` beside them: Go's
decoder ignores the extra keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from statekeeper.errors import LockConflict, LockMismatch, StatekeeperError
from statekeeper.telemetry.access import answer_of

__all__ = ["ErrorGuard", "error_response", "install_handlers"]

log = logging.getLogger("statekeeper.server")


def _holder_fields(body: bytes) -> dict[str, object] | None:
    """The holder's LockInfo as a JSON object, or None when it is not one.

    A lock written by another client (Terraform's backend "s3", a hand edit)
    may not be a LockInfo; the conflict is still answered, without its fields.
    """
    try:
        raw = json.loads(body)
        json.dumps(raw, ensure_ascii=False).encode("utf-8")  # lone surrogates
    except (ValueError, RecursionError):
        return None
    return raw if isinstance(raw, dict) else None


def error_response(exc: StatekeeperError) -> Response:
    headers: dict[str, str] = {}
    body = exc.to_json()
    if isinstance(exc, LockConflict | LockMismatch):
        holder = _holder_fields(exc.holder.body)
        if holder is not None:
            body = {**holder, "error": exc.code, "message": exc.message}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="statekeeper", charset="UTF-8"'
    if exc.status >= 500:
        log.error("%s: %s", exc.code, exc.message)
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def _statekeeper_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StatekeeperError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = exc.headers
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 405:
        path = request.url.path
        if path.startswith(("/state/", "/lock/")):
            takes = "Terraform's http backend uses GET, POST (or PUT), DELETE, LOCK and UNLOCK"
        else:
            # Not the router's Allow header: it names the methods of the first route on
            # the path, and a path may have a route per method (GET and POST /api/v1/tokens).
            allowed = _allowed(request)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
            takes = f"it takes {', '.join(allowed)} (docs/api.md lists the routes)"
        message = f"{request.method} is not allowed on {path}; {takes}"
    return JSONResponse(
        {"error": code, "message": message}, status_code=exc.status_code, headers=headers
    )


def _allowed(request: Request) -> list[str]:
    """The methods some route of the request's path takes, sorted: the Allow header a
    405 must carry (RFC 9110, 15.5.6). Each is tried on the routes as the router would
    (FastAPI nests included routers, so the routes' own lists are not at hand)."""
    routes = request.app.router.routes
    return sorted(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    )


def _safe(text: object) -> str:
    """Text that can be encoded whatever the client sent (lone surrogates escaped)."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


#: What a JSON API or UI route may take; Terraform's LOCK and UNLOCK have routes of their own.
_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")

_PLACES = {"query": "query parameter", "path": "path parameter", "header": "header"}


def _where(loc: tuple[object, ...]) -> str:
    """``query parameter limit``, ``body field scopes[0]``, ``the body``."""
    if not loc:
        return "the request"
    place, rest = str(loc[0]), loc[1:]
    if place == "body" and not rest:
        return "the body"
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{_safe(part)}" for part in rest)
    return f"{_PLACES.get(place, place + ' field')} {path.lstrip('.')}"


def _problem(error: Mapping[str, Any]) -> str:
    text = f"{_where(tuple(error.get('loc', ())))}: {_safe(error.get('msg', ''))}"
    if error.get("type") == "extra_forbidden":
        # Refused rather than ignored: a misspelt "dryrun" would otherwise run for real.
        text += " (nothing was done; /api/v1/openapi.json lists what this route takes)"
    return text


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """A body or parameter the API's models refuse: 400 in the one error shape, as
    every other bad input (FastAPI's own answer is a 422 that echoes the input, which
    may not even be encodable)."""
    assert isinstance(exc, RequestValidationError)
    message = "; ".join(map(_problem, exc.errors())) or "the request is invalid"
    sent = request.headers.get("content-type", "")
    if any(error.get("loc") == ("body",) for error in exc.errors()) and "json" not in sent:
        # FastAPI reads a body as JSON only when it says so: a bare curl --data does not.
        message += f"; send the body as JSON with Content-Type: application/json, not {sent!r}"
    from statekeeper.server.auth import is_ui_path  # here: auth answers with this module

    if is_ui_path(request.url.path):
        # A browser's page: an error page like the UI's others, not JSON.
        from statekeeper.server.ui.context import Page

        return Page(request).render("error.html", 400, title="Invalid request", message=message)
    return JSONResponse({"error": "invalid_request", "message": message}, status_code=400)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _internal()


def _internal() -> Response:
    return JSONResponse(
        {
            "error": "internal",
            "message": "the server failed unexpectedly; the request was "
            "not completed and the server log has the details",
        },
        status_code=500,
    )


class ErrorGuard:
    """The 500 of an exception nothing else answered, raised outside FastAPI's own
    layers (statekeeper's middlewares, Terraform's routes), as FastAPI's handler
    answers it; re-raised after, like FastAPI's, for the server to log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer, send = answer_of(scope, send)
        try:
            await self.app(scope, receive, send)
        except Exception:
            if answer.started:
                raise  # the answer is under way: only the connection can end it
            log.exception("unexpected error on %s %s", scope["method"], scope["path"])
            await _internal()(scope, receive, send)
            raise


def install_handlers(app: object) -> None:
    add = app.add_exception_handler  # type: ignore[attr-defined]
    add(StatekeeperError, _statekeeper_error)
    add(HTTPException, _http_error)
    add(RequestValidationError, _invalid_request)
    add(Exception, _unexpected)
