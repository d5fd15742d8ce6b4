"""The JSON API of webhooks, for admins: subscriptions and the delivery log.

``GET /api/v1/hooks`` (never secrets), ``GET /api/v1/hooks/deliveries`` and
``POST /api/v1/hooks/{name}/redeliver`` (dead letters sent again); all need
``admin`` on ``**`` (the server itself). Subscriptions are changed with
``statekeeper hooks`` on the machine.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from statekeeper.app import Services
from statekeeper.errors import BadRequest
from statekeeper.hooks.outbox import Outcome
from statekeeper.hooks.service import Webhooks
from statekeeper.hooks.views import DeliveryList, DeliveryView, HookList, HookView, Redelivered
from statekeeper.security.policy import Permission, require
from statekeeper.server.api import ERRORS, ApiRoute
from statekeeper.server.inputs import JsonIn
from statekeeper.server.tfhttp import caller_of
from statekeeper.times import parse_rfc3339

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1/hooks", tags=["webhooks"], responses=ERRORS, route_class=ApiRoute
)


def _hooks(request: Request, what: str) -> Webhooks:
    services: Services = request.app.state.services
    require(services.policy, caller_of(request), None, Permission.ADMIN, what)
    return services.hooks


@router.get("", summary="Webhook subscriptions (never their secrets)", response_model=HookList)
async def list_hooks(request: Request) -> HookList:
    def run() -> HookList:
        hooks = _hooks(request, "list the webhooks of")
        return HookList(hooks=[HookView.of(s) for s in hooks.all()])

    return await run_in_threadpool(run)


@router.get("/deliveries", summary="The delivery log, newest first", response_model=DeliveryList)
async def list_deliveries(
    request: Request,
    hook: str | None = Query(None, max_length=64),
    outcome: Annotated[Outcome | None, Query()] = None,
    limit: int = Query(100, ge=1, le=10_000),
) -> DeliveryList:
    def run() -> DeliveryList:
        hooks = _hooks(request, "read the webhook deliveries of")
        rows = hooks.outbox.deliveries(hook, outcome, limit)
        return DeliveryList(deliveries=[DeliveryView.of(r) for r in rows])

    return await run_in_threadpool(run)


class RedeliverIn(JsonIn):
    event_id: str | None = Field(
        None, max_length=200, description="The dead letter's event ID (one of these or all)"
    )
    all: bool = Field(False, description="Every dead letter of the hook (or those since)")
    since: str | None = Field(
        None,
        max_length=40,
        description="With all: only those that died at this RFC 3339 time (with a zone) or after",
        json_schema_extra={"format": "date-time"},
    )


@router.post(
    "/{name}/redeliver",
    summary="Queue dead letters again, with their event IDs",
    response_model=Redelivered,
)
async def redeliver(
    request: Request, body: RedeliverIn, name: str = Path(max_length=64)
) -> Redelivered:
    def run() -> Redelivered:
        hooks = _hooks(request, "redeliver the webhooks of")
        # Worded as the CLI's refusals, with the body's field names.
        if (body.event_id is None) == (not body.all):
            raise BadRequest(
                "give one dead letter's event_id or all: true (every dead letter of the "
                "hook), not both nor neither"
            )
        if body.since is not None and not body.all:
            raise BadRequest("since chooses among all the dead letters: give it with all: true")
        try:
            after = None if body.since is None else parse_rfc3339(body.since)
        except ValueError as exc:
            raise BadRequest(f"since: {exc}, e.g. 2026-01-01T00:00:00Z") from exc
        return Redelivered(hook=name, events=hooks.redeliver(name, body.event_id, after))

    return await run_in_threadpool(run)
