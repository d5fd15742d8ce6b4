"""The JSON API under ``/api/v1``: the operator's operations over HTTP.

Each route calls the same :class:`~statekeeper.state.operator.Operator`
method as the CLI, so an answer here is what ``statekeeper … --json`` prints.
A state name may hold ``/``, so the operation comes first in the path
(``/api/v1/versions/team/app.tfstate``), never after the name.

| route | answer |
| --- | --- |
| ``GET /api/v1/states?prefix=&details=`` | states with their locks |
| ``GET /api/v1/states/{name}?version=`` | one version's facts, resources, masked outputs |
| ``GET /api/v1/versions/{name}?limit=`` | versions, newest first |
| ``GET /api/v1/content/{name}?version=`` | a version's bytes, verbatim |
| ``PUT /api/v1/content/{name}?force=`` | push (under the lock, Operation state-push) |
| ``GET /api/v1/diff/{name}?from=&to=`` | resource-level diff |
| ``POST /api/v1/rollback/{name}`` ``{"to": V}`` | rollback (under the lock) |
| ``GET /api/v1/locks?prefix=`` | held locks, dual-lock drift flagged |
| ``DELETE /api/v1/locks/{name}?id=&force=`` | unlock |
| ``POST /api/v1/reap`` | remove stale locks |
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Body, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from statekeeper.errors import BadRequest, PayloadTooLarge
from statekeeper.events import Action
from statekeeper.security.policy import Permission
from statekeeper.server.body import read_body, single_header
from statekeeper.server.inputs import DurationIn, JsonIn, PrefixIn, StateNameIn, VersionRefIn
from statekeeper.server.tfhttp import PRIVATE, authorize, caller_of, refused
from statekeeper.state.listing import UNADDRESSABLE_HEADER, Unaddressable
from statekeeper.state.operator import Operator
from statekeeper.state.service import check_content_md5
from statekeeper.state.views import (
    DiffView,
    ErrorBody,
    HistoryEntry,
    LockEntry,
    PushResult,
    Release,
    RollbackResult,
    StateDetail,
    StateEntry,
)
from statekeeper.terraform.names import StateName

__all__ = ["ERRORS", "ApiRoute", "router"]

#: Every error answer has one shape; the statuses are those the operations raise.
ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Bad input: what is wrong and what to send instead"),
        (401, "No or unknown credentials"),
        (403, "The caller's grants do not allow this"),
        (404, "No such state or version"),
        (409, "A conflict: the serial/lineage guard, or no lock to remove"),
        (413, "The body is larger than the server's max_body"),
        (422, "Stored bytes that are no state, or a state encrypted by OpenTofu"),
        (423, "Locked: the holder's LockInfo fields are in the body"),
        (429, "Too many requests: Retry-After says when to try again"),
        (501, "The store cannot do this (e.g. history without versioning)"),
        (503, "The store is unavailable"),
    )
}


class ApiRoute(APIRoute):
    """A route of the JSON API. One that answers GET answers HEAD as GET, as HTTP asks
    of a server: the same status and headers, and no body (uvicorn sends none for
    a HEAD, reading the method from the request's own scope, not the copy here).

    FastAPI's routes answer only the methods they list, and a route listing HEAD
    would be a second operation in the OpenAPI document; Starlette's own routes
    (``/healthz``, the OpenAPI document) add HEAD to GET, as this does.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        return super().matches(self._as_get(scope))

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A method the route does not take is Starlette's 405 below, whatever the query:
        # TRACE /api/v1/content/x?force=true was told its parameter was the fault.
        if scope["method"] not in ("GET", "HEAD") and scope["method"] in (self.methods or ()):
            self._refuse_unknown_query(scope)
        await super().handle(self._as_get(scope), receive, send)

    def _refuse_unknown_query(self, scope: Scope) -> None:
        """A change asked with a query parameter the route does not take is refused, as
        a body field it does not take is (``server/inputs.py``): ignored, ``POST
        /api/v1/prune?dry_run=true`` pruned for real. Reads may carry any (a cache
        buster), and change nothing."""
        known = {param.alias for param in self.dependant.query_params}
        sent = parse_qsl(scope.get("query_string", b"").decode("latin-1"), True)
        unknown = sorted({key for key, _ in sent} - known)
        if unknown:
            # In pydantic's words for an unknown body field, which server/errors.py explains.
            msg = "Extra inputs are not permitted"
            raise RequestValidationError(
                [{"type": "extra_forbidden", "loc": ("query", key), "msg": msg} for key in unknown]
            )

    def _as_get(self, scope: Scope) -> Scope:
        if scope["method"] == "HEAD" and "GET" in (self.methods or ()):
            return {**scope, "method": "GET"}
        return scope


router = APIRouter(prefix="/api/v1", tags=["operator"], responses=ERRORS, route_class=ApiRoute)


class RollbackIn(JsonIn):
    to: VersionRefIn


class ReapIn(JsonIn):
    older_than: DurationIn  # 0s: every lock
    operation: str | None = None
    prefix: PrefixIn = ""
    dry_run: bool = False


def _operator(request: Request) -> Operator:
    s = request.app.state.services
    return Operator(
        s,
        workspace_key_prefix=s.settings.workspace_key_prefix,
        index=s.inventory,
    )


def _left_out(response: Response, left_out: Unaddressable) -> None:
    """Keys the listing left out (no state name) named in a header: the body keeps its
    documented shape, and the CLI warns as on a local store."""
    if left_out.count:
        response.headers[UNADDRESSABLE_HEADER] = left_out.header()


@router.get("/states", response_model=list[StateEntry])
def list_states(
    request: Request, response: Response, prefix: PrefixIn = "", details: bool = False
) -> list[StateEntry]:
    left_out = Unaddressable()
    rows = _operator(request).list_states(
        caller_of(request), prefix, details=details, unaddressable=left_out
    )
    _left_out(response, left_out)
    return rows


@router.get("/states/{name:path}", response_model=StateDetail)
def show_state(
    request: Request, response: Response, name: StateNameIn, version: VersionRefIn | None = None
) -> StateDetail:
    response.headers.update(PRIVATE)  # the outputs' values
    return _operator(request).show(caller_of(request), StateName(name), version)


@router.get("/versions/{name:path}", response_model=list[HistoryEntry])
def state_versions(
    request: Request, name: StateNameIn, limit: Annotated[int | None, Query(ge=1)] = None
) -> list[HistoryEntry]:
    return _operator(request).history(caller_of(request), StateName(name), limit)


@router.get(
    "/content/{name:path}",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "The bytes, verbatim"}},
)
def version_content(
    request: Request, name: StateNameIn, version: VersionRefIn | None = None
) -> Response:
    data = _operator(request).pull(caller_of(request), StateName(name), version)
    return Response(data, media_type="application/json", headers=PRIVATE)


@router.put(
    "/content/{name:path}",
    response_model=PushResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "The state file, stored verbatim",
        }
    },
)
async def push_state(request: Request, name: StateNameIn, force: bool = False) -> PushResult:
    state = StateName(name)
    if force:
        authorize(request, state, Permission.ADMIN, Action.PUSH, "force a push to")
    else:
        authorize(request, state, Permission.WRITE, Action.PUSH, "push to")
    try:
        content_md5 = single_header(request, "Content-MD5")
        data = await read_body(request, request.app.state.services.settings.max_body)
        check_content_md5(content_md5, data)
    except (BadRequest, PayloadTooLarge) as exc:
        await refused(request, state, Action.PUSH, exc)
    op, caller = _operator(request), caller_of(request)
    return await run_in_threadpool(lambda: op.push(caller, state, data, force=force))


@router.get("/diff/{name:path}", response_model=DiffView, response_model_by_alias=True)
def diff_versions(
    request: Request,
    name: StateNameIn,
    from_: Annotated[VersionRefIn | None, Query(alias="from")] = None,
    to: VersionRefIn | None = None,
) -> DiffView:
    return _operator(request).diff(caller_of(request), StateName(name), from_, to)


@router.post("/rollback/{name:path}", response_model=RollbackResult)
def rollback_state(request: Request, name: StateNameIn, body: RollbackIn) -> RollbackResult:
    return _operator(request).rollback(caller_of(request), StateName(name), body.to)


@router.get("/locks", response_model=list[LockEntry])
def list_locks(request: Request, response: Response, prefix: PrefixIn = "") -> list[LockEntry]:
    left_out = Unaddressable()
    rows = _operator(request).list_locks(caller_of(request), prefix, unaddressable=left_out)
    _left_out(response, left_out)
    return rows


@router.delete("/locks/{name:path}", response_model=Release)
def unlock_state(
    request: Request,
    name: StateNameIn,
    id: Annotated[str | None, Query(description="Remove only the lock with this ID")] = None,
    force: bool = False,
) -> Release:
    return _operator(request).unlock(caller_of(request), StateName(name), lock_id=id, force=force)


@router.post("/reap", response_model=list[Release])
def reap_locks(
    request: Request, response: Response, body: Annotated[ReapIn, Body()]
) -> list[Release]:
    left_out = Unaddressable()
    rows = _operator(request).reap(
        caller_of(request),
        older_than=body.older_than,
        operation=body.operation,
        prefix=body.prefix,
        dry_run=body.dry_run,
        unaddressable=left_out,
    )
    _left_out(response, left_out)
    return rows
