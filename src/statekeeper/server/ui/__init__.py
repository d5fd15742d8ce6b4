"""The web UI: server-rendered pages at ``/`` and ``/ui/…`` (see docs/ui.md)."""

from __future__ import annotations

from fastapi import APIRouter

from statekeeper.server.ui import actions, routes

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
router.include_router(routes.router)
router.include_router(actions.router)
