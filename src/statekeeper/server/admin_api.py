"""The JSON API of access control: the audit trail and API tokens, for admins.

``GET /api/v1/audit``, ``GET/POST /api/v1/tokens``, ``DELETE /api/v1/tokens/{name}``.
All of them need ``admin`` on ``**`` (the server itself); token changes and
every refusal are events like state operations (the token service emits them).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from statekeeper.app import Services
from statekeeper.errors import BadRequest
from statekeeper.events import Action, Event
from statekeeper.security.audit import AuditFilter
from statekeeper.security.policy import Permission, require
from statekeeper.server.api import ERRORS, ApiRoute
from statekeeper.server.inputs import (
    AuditActionIn,
    GrantIn,
    JsonIn,
    LifetimeIn,
    StateGlobIn,
    TokenNameIn,
)
from statekeeper.server.tfhttp import caller_of
from statekeeper.state.views import AuditEventView, AuditList, TokenCreated, TokenList, TokenView
from statekeeper.times import parse_duration, parse_rfc3339

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["security"], responses=ERRORS, route_class=ApiRoute)
# Text, parsed here: pydantic's datetime also reads a number as Unix seconds, so
# ?since=20260101 (meant as a date) was 1970-08-23 and every event came back.
_SINCE = Query(
    None, description="RFC 3339 time with a zone", json_schema_extra={"format": "date-time"}
)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.get("/audit", summary="The audit trail, oldest first", response_model=AuditList)
async def list_audit(
    request: Request,
    state: Annotated[StateGlobIn | None, Query()] = None,
    actor: str | None = Query(None, max_length=200),
    action: Annotated[AuditActionIn | None, Query(max_length=50)] = None,
    since: str | None = _SINCE,
    limit: int = Query(1000, ge=1, le=100_000),
) -> AuditList:
    services = _services(request)
    caller = caller_of(request)

    def run() -> list[Event]:
        with services.events.event(Action.AUDIT_READ, caller, record_success=False):
            require(services.policy, caller, None, Permission.ADMIN, "read the audit trail of")
        try:
            after = None if since is None else parse_rfc3339(since)
        except ValueError as exc:
            # Worded as the other query parameters' refusals are (server/errors.py).
            raise BadRequest(f"query parameter since: {exc}, e.g. 2026-01-01T00:00:00Z") from exc
        where = AuditFilter(state=state, actor=actor, action=action, since=after, limit=limit)
        return services.audit.query(where)

    events = await run_in_threadpool(run)
    return AuditList(events=[AuditEventView.of(e) for e in events])


class TokenRequest(JsonIn):
    name: TokenNameIn = Field(max_length=64)
    scopes: list[GrantIn] = Field(min_length=1, max_length=100)
    expires: LifetimeIn | None = Field(None, max_length=20)


@router.get(
    "/tokens",
    summary="API tokens (names, scopes, expiry; never secrets)",
    response_model=TokenList,
)
async def list_tokens(request: Request) -> TokenList:
    services = _services(request)
    caller = caller_of(request)

    def run() -> TokenList:
        return TokenList(tokens=[TokenView.of(r) for r in services.tokens.all(caller)])

    return await run_in_threadpool(run)


@router.post(
    "/tokens",
    summary="Create a token; the secret is in this answer only",
    response_model=TokenCreated,
)
async def post_token(request: Request, body: TokenRequest) -> TokenCreated:
    services = _services(request)
    caller = caller_of(request)

    def run() -> TokenCreated:
        expires = parse_duration(body.expires, what="expires") if body.expires else None
        issued = services.tokens.create(caller, body.name, body.scopes, expires)
        return TokenCreated.issued(issued.record, issued.secret)

    return await run_in_threadpool(run)


@router.delete("/tokens/{name}", summary="Revoke a token", response_model=TokenView)
async def delete_token(request: Request, name: TokenNameIn) -> TokenView:
    services = _services(request)
    caller = caller_of(request)

    def run() -> TokenView:
        return TokenView.of(services.tokens.revoke(caller, name))

    return await run_in_threadpool(run)
