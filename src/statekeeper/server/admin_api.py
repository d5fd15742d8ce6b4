"""The JSON API of access control: the audit trail and API tokens, for admins.

``GET /api/v1/audit``, ``GET/POST /api/v1/tokens``, ``DELETE /api/v1/tokens/{name}``.
All of them need ``admin`` on ``**`` (the server itself); token changes and
every refusal are events like state operations (the token service emits them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from statekeeper.app import Services
from statekeeper.errors import BadRequest
from statekeeper.events import Action, Event
from statekeeper.security.audit import AuditFilter
from statekeeper.security.policy import Permission, require
from statekeeper.security.tokens import parse_duration
from statekeeper.server.tfhttp import caller_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["security"])
_SINCE = Query(None, description="RFC 3339 time with a zone")


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.get("/audit", summary="The audit trail, oldest first")
async def list_audit(
    request: Request,
    state: str | None = Query(None, description="state-name glob, e.g. team/**"),
    actor: str | None = Query(None, max_length=200),
    action: str | None = Query(None, max_length=50),
    since: datetime | None = _SINCE,
    limit: int = Query(1000, ge=1, le=100_000),
) -> dict[str, Any]:
    services = _services(request)
    caller = caller_of(request)

    def run() -> list[Event]:
        with services.events.event(Action.AUDIT_READ, caller, record_success=False):
            require(services.policy, caller, None, Permission.ADMIN, "read the audit trail of")
        if state is not None:
            from statekeeper.security.grants import parse_grant

            parse_grant(state + ":outputs")  # a malformed glob is a 400, not a 500
        if since is not None and since.tzinfo is None:
            raise BadRequest("'since' needs a time zone, e.g. 2026-01-01T00:00:00Z")
        where = AuditFilter(state=state, actor=actor, action=action, since=since, limit=limit)
        return services.audit.query(where)

    events = await run_in_threadpool(run)
    return {"events": [e.to_json() for e in events]}


class TokenRequest(BaseModel):
    name: str = Field(max_length=64)
    scopes: list[str] = Field(min_length=1, max_length=100)
    expires: str | None = Field(None, description="e.g. 90d, 12h", max_length=20)


@router.get("/tokens", summary="API tokens (names, scopes, expiry; never secrets)")
async def list_tokens(request: Request) -> dict[str, Any]:
    services = _services(request)
    caller = caller_of(request)

    def run() -> list[dict[str, object]]:
        return [r.to_json() for r in services.tokens.all(caller)]

    return {"tokens": await run_in_threadpool(run)}


@router.post("/tokens", summary="Create a token; the secret is in this answer only")
async def post_token(request: Request, body: TokenRequest) -> dict[str, Any]:
    services = _services(request)
    caller = caller_of(request)

    def run() -> dict[str, Any]:
        expires = parse_duration(body.expires) if body.expires else None
        issued = services.tokens.create(caller, body.name, body.scopes, expires)
        return {**issued.record.to_json(), "secret": issued.secret}

    return await run_in_threadpool(run)


@router.delete("/tokens/{name}", summary="Revoke a token")
async def delete_token(request: Request, name: str) -> dict[str, Any]:
    services = _services(request)
    caller = caller_of(request)

    def run() -> dict[str, object]:
        return services.tokens.revoke(caller, name).to_json()

    return await run_in_threadpool(run)
