"""The JSON API of webhooks, for admins: subscriptions and the delivery log.

``GET /api/v1/hooks`` (never secrets) and ``GET /api/v1/hooks/deliveries``;
both need ``admin`` on ``**`` (the server itself). Subscriptions are changed
with ``statekeeper hooks`` on the machine.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from statekeeper.app import Services
from statekeeper.hooks.outbox import Outcome
from statekeeper.hooks.service import Webhooks
from statekeeper.hooks.views import DeliveryList, DeliveryView, HookList, HookView
from statekeeper.security.policy import Permission, require
from statekeeper.server.api import ERRORS, ApiRoute
from statekeeper.server.tfhttp import caller_of

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
