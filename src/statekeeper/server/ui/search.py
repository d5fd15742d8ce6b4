"""The inventory page: find any resource in the states one may read, and counts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from statekeeper.errors import StatekeeperError
from statekeeper.inventory.views import counts, search
from statekeeper.server.ui.context import PAGE, Page
from statekeeper.state.listing import Unaddressable

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.api_route("/ui/search", methods=PAGE)
def search_page(
    request: Request, q: str = "", limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> Response:
    ui = Page(request)
    if (redirect := ui.gate()) is not None:
        return redirect
    caller, services = ui.who(), ui.services
    try:
        inventory = services.inventory()
        result = search(inventory, services.policy, caller, q, limit) if q.strip() else None
        totals = counts(inventory, services.policy, caller)
    except StatekeeperError as exc:
        return ui.render(
            "search.html",
            exc.status,
            title="Search",
            q=q,
            result=None,
            totals=None,
            failure=exc.message,
            left_out=None,
        )
    # Not indexed, so never found: named as `statekeeper search` names them (only to a
    # caller who may read every state; the list is empty for anyone else).
    left_out = Unaddressable(dict.fromkeys(totals.unaddressable)).warning()
    return ui.render(
        "search.html",
        title="Search",
        q=q,
        result=result,
        totals=totals,
        failure=None,
        left_out=left_out,
    )
