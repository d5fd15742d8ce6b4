"""The inventory over HTTP: ``GET /api/v1/search?q=`` and ``GET /api/v1/inventory``.

Answers cover only the states the caller may ``read``; the grammar of ``q``
is in :mod:`statekeeper.inventory.query`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from statekeeper.app import Services
from statekeeper.inventory.query import MAX_QUERY
from statekeeper.inventory.views import MAX_LIMIT, InventoryCounts, SearchResult, counts, search
from statekeeper.server.api import ERRORS, ApiRoute
from statekeeper.server.inputs import Documented
from statekeeper.server.tfhttp import caller_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["inventory"], responses=ERRORS, route_class=ApiRoute)


@router.get(
    "/search",
    response_model=SearchResult,
    summary="Find resources across all states",
    description="A search that runs over the index longer than the server's "
    "search_time_limit is stopped and answered 400 search_too_costly: narrow it "
    "(docs/inventory.md#search-cost).",
)
async def search_resources(
    request: Request,
    q: Annotated[
        # The length is the query parser's rule, in its words (MAX_QUERY).
        Annotated[str, Documented(maxLength=MAX_QUERY)],
        Query(
            min_length=1,
            description='words, "phrases", '
            f"type:… provider:… module:… name:… state:GLOB terraform:…; at most {MAX_QUERY} "
            "characters",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> SearchResult:
    services: Services = request.app.state.services
    caller = caller_of(request)
    return await run_in_threadpool(
        lambda: search(services.inventory(), services.policy, caller, q, limit)
    )


@router.get(
    "/inventory",
    response_model=InventoryCounts,
    summary="Counts by resource type, provider and Terraform version",
)
async def inventory_counts(request: Request) -> InventoryCounts:
    services: Services = request.app.state.services
    caller = caller_of(request)
    return await run_in_threadpool(lambda: counts(services.inventory(), services.policy, caller))
