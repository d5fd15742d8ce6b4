"""The JSON API of history hygiene: the trash and the retention rules.

``GET /api/v1/trash``, ``POST /api/v1/trash/restore/{name}``,
``DELETE /api/v1/trash/{name}`` (purge) and ``POST /api/v1/prune``. The
services check the grants (admin for every change) and emit the events.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from pydantic import Field

from statekeeper.app import Services
from statekeeper.errors import CapabilityMissing
from statekeeper.server.api import ERRORS, ApiRoute
from statekeeper.server.inputs import JsonIn, PrefixIn, StateNameIn
from statekeeper.server.tfhttp import caller_of
from statekeeper.state.history_views import PruneView, PurgedView, RestoredView, TrashEntry
from statekeeper.state.prune import prune
from statekeeper.state.trash import TrashService
from statekeeper.terraform.names import StateName

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["history"], responses=ERRORS, route_class=ApiRoute)


class PruneIn(JsonIn):
    prefix: PrefixIn = Field("", max_length=1024)
    dry_run: bool = False


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _trash(request: Request) -> TrashService:
    trash = _services(request).trash
    if trash is None:
        raise CapabilityMissing("this server keeps no trash")
    return trash


@router.get(
    "/trash", summary="Deleted states that can be restored", response_model=list[TrashEntry]
)
def list_trash(request: Request, prefix: PrefixIn = "") -> list[TrashEntry]:
    return [TrashEntry.of(t) for t in _trash(request).entries(caller_of(request), prefix)]


@router.post(
    "/trash/restore/{name:path}",
    summary="Make a deleted state current again, byte for byte",
    response_model=RestoredView,
)
def restore_state(request: Request, name: StateNameIn) -> RestoredView:
    return RestoredView.of(_trash(request).restore(StateName(name), caller_of(request)))


@router.delete(
    "/trash/{name:path}", summary="Remove a deleted state for good", response_model=PurgedView
)
def purge_state(request: Request, name: StateNameIn) -> PurgedView:
    removed = _trash(request).purge(StateName(name), caller_of(request))
    return PurgedView(name=name, removed=removed)


@router.post(
    "/prune", summary="Apply the retention rules of [history]", response_model=list[PruneView]
)
def prune_versions(request: Request, body: Annotated[PruneIn, Body()]) -> list[PruneView]:
    services = _services(request)
    done = prune(
        services.store,
        services.settings.history,
        services.policy,
        services.events,
        caller_of(request),
        prefix=body.prefix,
        dry_run=body.dry_run,
    )
    return [PruneView.of(p) for p in done]
