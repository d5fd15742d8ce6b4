"""The JSON API of access control: the audit trail and API tokens, for admins.

``GET /api/v1/audit``, ``GET/POST /api/v1/tokens``, ``DELETE /api/v1/tokens/{name}``.
All of them need ``admin`` on ``**`` (the server itself); token changes are
audited like state operations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from statekeeper.app import Services
from statekeeper.errors import BadRequest, CapabilityMissing, Forbidden
from statekeeper.security.audit import AuditEvent, AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, require
from statekeeper.security.tokens import TokenStore, create_token, parse_duration, revoke_token
from statekeeper.server.inputs import JsonIn
from statekeeper.server.tfhttp import caller_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["security"])
_SINCE = Query(None, description="RFC 3339 time with a zone")


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _admin(services: Services, caller: Caller, what: str, action: str) -> None:
    """Require admin on the server itself; a denial is audited like any other."""
    try:
        require(services.policy, caller, None, Permission.ADMIN, what)
    except Forbidden as exc:
        services.audit.record(
            AuditEvent(
                action=action,
                actor=caller.actor,
                outcome=exc.code,
                remote_addr=caller.remote_addr,
                claims=dict(caller.claims),
                detail=exc.message,
            )
        )
        raise


def _tokens(services: Services) -> TokenStore:
    if services.tokens is None:
        raise CapabilityMissing(
            "this server keeps no API tokens (its store has no database and no tokens_file "
            "is set); configure tokens_file"
        )
    return services.tokens


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

    def run() -> list[AuditEvent]:
        _admin(services, caller, "read the audit trail of", "audit-read")
        if state is not None:
            from statekeeper.security.grants import parse_grant

            parse_grant(state + ":outputs")  # a malformed glob is a 400, not a 500
        if since is not None and since.tzinfo is None:
            raise BadRequest("'since' needs a time zone, e.g. 2026-01-01T00:00:00Z")
        where = AuditFilter(state=state, actor=actor, action=action, since=since, limit=limit)
        return services.audit.query(where)

    events = await run_in_threadpool(run)
    return {"events": [e.to_json() for e in events]}


class TokenRequest(JsonIn):
    name: str = Field(max_length=64)
    scopes: list[str] = Field(min_length=1, max_length=100)
    expires: str | None = Field(None, description="e.g. 90d, 12h", max_length=20)


@router.get("/tokens", summary="API tokens (names, scopes, expiry; never secrets)")
async def list_tokens(request: Request) -> dict[str, Any]:
    services = _services(request)
    caller = caller_of(request)

    def run() -> list[dict[str, object]]:
        _admin(services, caller, "list the tokens of", "token-list")
        return [r.to_json() for r in _tokens(services).all()]

    return {"tokens": await run_in_threadpool(run)}


@router.post("/tokens", summary="Create a token; the secret is in this answer only")
async def post_token(request: Request, body: TokenRequest) -> dict[str, Any]:
    services = _services(request)
    caller = caller_of(request)

    def run() -> dict[str, Any]:
        _admin(services, caller, "create tokens on", "token-create")
        expires = parse_duration(body.expires) if body.expires else None
        issued = create_token(
            _tokens(services), services.audit, caller, body.name, body.scopes, expires
        )
        return {**issued.record.to_json(), "secret": issued.secret}

    return await run_in_threadpool(run)


@router.delete("/tokens/{name}", summary="Revoke a token")
async def delete_token(request: Request, name: str) -> dict[str, Any]:
    services = _services(request)
    caller = caller_of(request)

    def run() -> dict[str, object]:
        _admin(services, caller, "revoke tokens on", "token-revoke")
        record = revoke_token(_tokens(services), services.audit, caller, name)
        return record.to_json()

    return await run_in_threadpool(run)
