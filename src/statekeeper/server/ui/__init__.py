"""The web UI: server-rendered pages at ``/`` and ``/ui/…`` (see docs/ui.md), and the
inventory's JSON routes it shares its index with, under one router for the app."""

from __future__ import annotations

from fastapi import APIRouter

from statekeeper.server import search_api
from statekeeper.server.ui import actions, oidc, routes, search, trash

__all__ = ["router"]

router = APIRouter()
router.include_router(routes.router)
router.include_router(actions.router)
router.include_router(trash.router)
router.include_router(search.router)
router.include_router(oidc.router)
router.include_router(search_api.router)
