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

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from statekeeper.server.body import read_body
from statekeeper.server.inputs import JsonIn
from statekeeper.server.tfhttp import caller_of
from statekeeper.state.operator import Operator
from statekeeper.terraform.names import StateName

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["operator"])


class LockOut(BaseModel):
    name: str
    id: str
    operation: str
    who: str
    info: str
    version: str
    path: str
    created: str | None = Field(description="RFC 3339, UTC: the lock's Created (or server time)")
    age_seconds: float | None
    actor: str | None
    remote_addr: str | None
    kinds: list[str] = Field(description="Lock tables holding it: dynamodb, s3lock, sqlite…")
    drift: bool = Field(description="Held in one of two configured lock tables only")
    missing: list[str]
    damaged: str | None = Field(
        default=None,
        description="Why the stored lock is not a readable LockInfo (null for a sound lock)",
    )


class StateOut(BaseModel):
    name: str
    size: int
    last_modified: str
    version_id: str
    serial: int | None = Field(description="None when the listing does not carry it (details)")
    lineage: str | None
    locked: bool
    lock: LockOut | None
    versions: int | None = Field(description="Version count, only with details=true")


class VersionOut(BaseModel):
    name: str
    version_id: str
    serial: int | None
    lineage: str | None
    size: int
    md5: str | None
    sha256: str | None
    created: str
    lock_id: str | None
    actor: str | None
    is_current: bool


class HistoryOut(BaseModel):
    version_id: str
    serial: int | None
    lineage: str | None
    created: str
    actor: str | None
    size: int
    sha256: str | None
    is_current: bool
    resources_changed: int | None = Field(
        description="Instances added, removed or changed against the previous version"
    )


class OutputValue(BaseModel):
    value: Any = Field(description="None when sensitive")
    sensitive: bool


class ShowOut(BaseModel):
    name: str
    version: VersionOut
    locked: bool
    lock_id: str | None
    encrypted: bool
    terraform_version: str | None = None
    resources: list[str] | None
    outputs: dict[str, OutputValue] | None


class Change(BaseModel):
    path: str
    before: Any
    after: Any
    sensitive: bool


class InstanceChangeOut(BaseModel):
    address: str
    changes: list[Change]


class OutputChangeOut(BaseModel):
    name: str
    action: str = Field(description="added, removed or changed")
    before: Any
    after: Any
    sensitive: bool


class BeforeAfter(BaseModel):
    before: Any
    after: Any


class DiffOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    from_: str | None = Field(alias="from", description="None: compared with no state")
    to: str
    serial: BeforeAfter
    lineage: BeforeAfter
    resources_changed: int
    added: list[str]
    removed: list[str]
    changed: list[InstanceChangeOut]
    outputs: list[OutputChangeOut]


class RollbackIn(JsonIn):
    to: str = Field(description="A version ID, serial:N or current")


class RollbackOut(BaseModel):
    name: str
    restored_version: str
    restored_serial: int | None
    previous_version: str
    previous_serial: int | None
    version: VersionOut


class PushOut(BaseModel):
    name: str
    created: bool = Field(description="False when the bytes were already current")
    version: VersionOut


class ReleaseOut(BaseModel):
    name: str
    id: str
    operation: str
    who: str
    created: str | None
    age_seconds: float | None
    removed: bool
    reason: str


class ReapIn(JsonIn):
    older_than: str = Field(description="30m, 2h, 1d…; 0s for every lock")
    operation: str | None = None
    prefix: str = ""
    dry_run: bool = False


def _operator(request: Request) -> Operator:
    s = request.app.state.services
    return Operator(s.states, s.locks, s.history)


@router.get("/states", response_model=list[StateOut])
def list_states(request: Request, prefix: str = "", details: bool = False) -> list[dict[str, Any]]:
    return _operator(request).list_states(caller_of(request), prefix, details=details)


@router.get("/states/{name:path}", response_model=ShowOut)
def show_state(request: Request, name: str, version: str | None = None) -> dict[str, Any]:
    return _operator(request).show(caller_of(request), StateName(name), version)


@router.get("/versions/{name:path}", response_model=list[HistoryOut])
def state_versions(
    request: Request, name: str, limit: Annotated[int | None, Query(ge=1)] = None
) -> list[dict[str, Any]]:
    return _operator(request).history(caller_of(request), StateName(name), limit)


@router.get(
    "/content/{name:path}",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}, "description": "The bytes, verbatim"}},
)
def version_content(request: Request, name: str, version: str | None = None) -> Response:
    data = _operator(request).pull(caller_of(request), StateName(name), version)
    return Response(data, media_type="application/json")


@router.put(
    "/content/{name:path}",
    response_model=PushOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "The state file, stored verbatim",
        }
    },
)
async def push_state(request: Request, name: str, force: bool = False) -> dict[str, Any]:
    state = StateName(name)
    data = await read_body(request, request.app.state.services.settings.max_body)
    op, caller = _operator(request), caller_of(request)
    return await run_in_threadpool(lambda: op.push(caller, state, data, force=force))


@router.get("/diff/{name:path}", response_model=DiffOut, response_model_by_alias=True)
def diff_versions(
    request: Request,
    name: str,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
) -> dict[str, Any]:
    return _operator(request).diff(caller_of(request), StateName(name), from_, to)


@router.post("/rollback/{name:path}", response_model=RollbackOut)
def rollback_state(request: Request, name: str, body: RollbackIn) -> dict[str, Any]:
    return _operator(request).rollback(caller_of(request), StateName(name), body.to)


@router.get("/locks", response_model=list[LockOut])
def list_locks(request: Request, prefix: str = "") -> list[dict[str, Any]]:
    return _operator(request).list_locks(caller_of(request), prefix)


@router.delete("/locks/{name:path}", response_model=ReleaseOut)
def unlock_state(
    request: Request,
    name: str,
    id: Annotated[str | None, Query(description="Remove only the lock with this ID")] = None,
    force: bool = False,
) -> dict[str, Any]:
    return _operator(request).unlock(caller_of(request), StateName(name), lock_id=id, force=force)


@router.post("/reap", response_model=list[ReleaseOut])
def reap_locks(request: Request, body: Annotated[ReapIn, Body()]) -> list[dict[str, Any]]:
    return _operator(request).reap(
        caller_of(request),
        older_than=body.older_than,
        operation=body.operation,
        prefix=body.prefix,
        dry_run=body.dry_run,
    )
