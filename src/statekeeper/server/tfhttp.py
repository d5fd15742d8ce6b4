"""Terraform's and OpenTofu's ``backend "http"`` protocol on ``/state/<name>``.

Status codes follow ``docs/protocol.md#status-codes`` to the letter:
exactly 200 for LOCK, UNLOCK and DELETE (Terraform rejects 201/204 there),
404 for "no state", 423 with the holder's LockInfo on a conflict. Service
calls are blocking (SQLite, boto3): on a store on this machine a request does its
store work on the event loop's thread and hands its fsync to a worker thread (all
of it when it is alone in the server; a write of a new version or a delete hops whole beside
others); on S3 and DynamoDB all of it hops (``server/workers.py``).

``/lock/<name>`` takes the GitLab-style methods too (POST/PUT to lock,
DELETE to unlock) for setups that set ``lock_method``/``unlock_method``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import NoReturn

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from statekeeper.app import Services
from statekeeper.errors import (
    BadRequest,
    InvalidLockInfo,
    InvalidStateName,
    LockConflict,
    PayloadTooLarge,
    StatekeeperError,
)
from statekeeper.events import Action
from statekeeper.security.caller import ANONYMOUS, Caller
from statekeeper.security.policy import Permission
from statekeeper.server.body import BodyStream, read_body, single_header
from statekeeper.server.errors import error_response
from statekeeper.server.lockwait import LockWaits
from statekeeper.server.workers import Workers
from statekeeper.state.reads import StateStream
from statekeeper.state.service import check_content_md5
from statekeeper.terraform.lockinfo import LockInfo, lock_info_too_large
from statekeeper.terraform.names import NAME_RULES, StateName

__all__ = ["TerraformRoutes", "authorize", "backend_block", "caller_of", "refused", "routes"]

STATE_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "LOCK", "UNLOCK"]
LOCK_METHODS = ["LOCK", "UNLOCK", "POST", "PUT", "DELETE"]

Handler = Callable[[Request], Awaitable[Response]]

#: A character no path of ours holds. Routes' patterns end in ``$``, which matches
#: before a final newline: ``/state/a%0A`` would be the state ``a``.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _workers(request: Request) -> Workers:
    workers: Workers = request.app.state.workers
    return workers


def caller_of(request: Request) -> Caller:
    """The identity behind a request (replaced by authentication when configured)."""
    caller: Caller | None = getattr(request.state, "caller", None)
    if caller is not None:
        return caller
    return Caller(actor=ANONYMOUS, remote_addr=request.client.host if request.client else None)


def authorize(
    request: Request, name: StateName, needed: Permission, action: Action, what: str
) -> None:
    """Answer 403 from the headers alone, before a byte of the body is read.

    The services check again with the whole request; checking here first keeps a
    caller without a grant from making the server receive (and hold) a body of up
    to ``max_body`` bytes. The refusal is recorded as the operation's event.
    """
    _services(request).states.authorize(name, caller_of(request), needed, action, what)


def _no_body(request: Request) -> bool:
    """True when the request declares an empty body (Terraform's force-unlock)."""
    length = request.headers.get("content-length")
    return length in (None, "0") and "transfer-encoding" not in request.headers


def _ok(payload: dict[str, object] | None = None) -> Response:
    return JSONResponse(payload or {}, status_code=200)


# A state up to this size is read whole in the thread that opened it and sent as
# one body: a streamed answer costs a hop to the thread pool per piece and a task
# watching for the client's disconnect, more than the read itself at this size.
WHOLE_GET_LIMIT = 1 << 20


def _read(
    services: Services, name: StateName, caller: Caller, head: bool
) -> tuple[StateStream | None, bytes | None]:
    """The current state, and its bytes unless ``head`` or it is too large to
    read whole (then its pieces are left open for the answer to stream)."""
    current = services.states.read_stream(name, caller)
    if current is None:
        return None, None
    if head:
        _close(current.chunks)
        return current, None
    if current.version.size > WHOLE_GET_LIMIT:
        return current, None
    try:
        return current, b"".join(current.chunks)
    finally:
        _close(current.chunks)


#: Headers of an answer that carries a state's content (secrets, often): no cache
#: between here and the caller keeps a copy. (``nosniff`` is on every answer:
#: ``telemetry/access.py``.)
PRIVATE = {"Cache-Control": "no-store"}


async def _get(request: Request, name: StateName) -> Response:
    services = _services(request)
    caller, head = caller_of(request), request.method == "HEAD"
    current, data = await _workers(request).run(lambda: _read(services, name, caller, head))
    if current is None:
        return JSONResponse(
            {"error": "state_not_found", "message": f"there is no state named {name} yet"},
            status_code=404,
        )
    v = current.version
    md5 = bytes.fromhex(v.md5) if v.md5 else b""
    headers = {
        "Content-MD5": base64.b64encode(md5).decode(),
        "ETag": f'"{v.sha256}"',
        "X-Statekeeper-Version": v.version_id,
        "Content-Length": str(v.size),
        **PRIVATE,
    }
    if head:
        return Response(b"", media_type="application/json", headers=headers)
    if data is not None:
        return Response(data, media_type="application/json", headers=headers)
    # Sent as read from the store, a piece at a time: a large state is never
    # whole in memory (the store's read ends when the last piece is sent).
    return StreamingResponse(current.chunks, media_type="application/json", headers=headers)


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()


async def refused(
    request: Request, name: StateName, action: Action, error: StatekeeperError
) -> NoReturn:
    """Record ``error``, found before ``action`` could run, as its event; raise it."""
    states, caller = _services(request).states, caller_of(request)
    await _workers(request).run(lambda: states.refuse(name, caller, action, error))
    raise error  # refuse raised it already


async def _write(request: Request, name: StateName) -> Response:
    services = _services(request)
    authorize(request, name, Permission.WRITE, Action.WRITE, "write")
    content_md5 = single_header(request, "Content-MD5")
    # Hashed, validated and handed to the store as it arrives (state/intake.py).
    try:
        body = BodyStream(request, services.settings.max_body)
    except (BadRequest, PayloadTooLarge) as exc:  # its declared length
        await refused(request, name, Action.WRITE, exc)
    try:
        await body.prefetch()
        outcome = await _workers(request).run(
            lambda: services.states.write(
                name,
                body,
                caller_of(request),
                lock_id=request.query_params.get("ID") or None,
                content_md5=content_md5,
            ),
            waits_for_loop=not body.whole,  # the rest of the body is received there
            durable=True,
        )
    finally:
        await body.aclose()
    return _ok(
        {
            "version_id": outcome.version.version_id,
            "serial": outcome.version.serial,
            "created": outcome.created,
        }
    )


async def _delete(request: Request, name: StateName) -> Response:
    services = _services(request)
    await _workers(request).run(
        lambda: services.states.delete(
            name, caller_of(request), lock_id=request.query_params.get("ID") or None
        ),
        durable=True,
    )
    return _ok()


async def _lock_body(request: Request, name: StateName, action: Action) -> bytes:
    """A LockInfo body: small, so its limit is max_lock_info (or max_body if lower);
    checked against its Content-MD5 when one came with it."""
    settings = _services(request).settings
    try:
        content_md5 = single_header(request, "Content-MD5")
        if settings.max_body < settings.max_lock_info:
            body = await read_body(request, settings.max_body)
        else:
            body = await read_body(request, settings.max_lock_info, lock_info_too_large)
        check_content_md5(content_md5, body)
    except (BadRequest, PayloadTooLarge) as exc:
        await refused(request, name, action, exc)
    return body


def _waits(request: Request) -> LockWaits:
    waits: LockWaits = request.app.state.lock_waits
    return waits


async def _lock(request: Request, name: StateName) -> Response:
    services = _services(request)
    authorize(request, name, Permission.WRITE, Action.LOCK, "lock")
    body = await _lock_body(request, name, Action.LOCK)
    waits, key = _waits(request), str(name)
    try:
        lock_id = LockInfo.parse(body).id
    except InvalidLockInfo:
        lock_id = None  # refused, and recorded, by the service
    caller, workers = caller_of(request), _workers(request)
    if lock_id is None:
        lock = await workers.run(lambda: services.locks.lock(name, body, caller))
        return Response(lock.body, status_code=200, media_type="application/json")
    try:
        await waits.turn(key, lock_id)
        lock = await workers.run(lambda: services.locks.lock(name, body, caller))
    except LockConflict as conflict:
        waits.refused(key, lock_id, conflict.holder.id)
        waits.abandoned(key, lock_id)
        raise
    except BaseException:
        waits.abandoned(key, lock_id)  # refused otherwise, or the client went away
        raise
    waits.taken(key, lock.id)
    return Response(lock.body, status_code=200, media_type="application/json")


async def _unlock(request: Request, name: StateName) -> Response:
    services = _services(request)
    # An empty body is Terraform's force-unlock ('admin'); any other needs at least
    # 'write' (OpenTofu's force form, known from the body, is checked after it).
    action = Action.FORCE_UNLOCK if _no_body(request) else Action.UNLOCK
    if action is Action.FORCE_UNLOCK:
        authorize(request, name, Permission.ADMIN, action, "force-unlock")
    else:
        authorize(request, name, Permission.WRITE, action, "unlock")
    body = await _lock_body(request, name, action)
    caller = caller_of(request)
    released = await _workers(request).run(lambda: services.locks.unlock(name, body, caller))
    _waits(request).released(str(name))
    return Response(released.body, status_code=200, media_type="application/json")


_STATE: dict[str, Callable[[Request, StateName], Awaitable[Response]]] = {
    "GET": _get,
    "HEAD": _get,
    "POST": _write,
    "PUT": _write,
    "DELETE": _delete,
    "LOCK": _lock,
    "UNLOCK": _unlock,
}
_LOCK: dict[str, Callable[[Request, StateName], Awaitable[Response]]] = {
    "LOCK": _lock,
    "POST": _lock,
    "PUT": _lock,
    "UNLOCK": _unlock,
    "DELETE": _unlock,
}


def _dispatch(table: dict[str, Callable[[Request, StateName], Awaitable[Response]]]) -> Handler:
    async def endpoint(request: Request) -> Response:
        name = StateName(request.path_params["name"])
        return await table[request.method](request, name)

    return endpoint


def routes() -> list[Route]:
    """Terraform's two routes, for :class:`TerraformRoutes` and the router: it
    answers a method they do not take with 405, and the access line finds there
    the route of a request answered before any routing (a 401)."""
    return [
        Route(
            "/state/{name:path}", _dispatch(_STATE), methods=STATE_METHODS, include_in_schema=False
        ),
        Route("/lock/{name:path}", _dispatch(_LOCK), methods=LOCK_METHODS, include_in_schema=False),
    ]


class TerraformRoutes:
    """Terraform's two routes answered here, ahead of FastAPI's exception layers
    and router, which see everything else (a method these routes do not take
    included: the router's 405).

    Nearly all of the traffic is Terraform's, and each of those layers costs every
    request a few microseconds and a wrapper around its sending. An error is
    answered as the exception handlers would (``server/errors.py``); anything but
    a StatekeeperError is left to the error guard around the whole app (a 500).
    """

    def __init__(self, app: ASGIApp, routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] == "http" and _CONTROL.search(path):
            await error_response(_control_refused(path))(scope, receive, send)
            return
        if scope["type"] == "http" and path.startswith(("/state/", "/lock/")):
            for route in self.routes:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope["route"] = route
                    scope.update(child)
                    await self._answer(child["endpoint"], scope, receive, send)
                    return
                if match is Match.PARTIAL:
                    break
        await self.app(scope, receive, send)

    async def _answer(self, endpoint: Handler, scope: Scope, receive: Receive, send: Send) -> None:
        workers: Workers = scope["app"].state.workers
        with workers.serving(scope.get("client")):  # counted until answered: Workers.run
            try:
                response = await endpoint(Request(scope, receive, send))
            except StatekeeperError as exc:
                response = error_response(exc)
            await response(scope, receive, send)


def _control_refused(path: str) -> BadRequest:
    char = _CONTROL.search(path)
    named = f"the control character U+{ord(char.group()):04X}" if char else "a control character"
    if path.startswith(("/state/", "/lock/")):
        name = path.split("/", 2)[2]
        return InvalidStateName(
            f"the state name {name!r} has a character that is not allowed ({named}); " + NAME_RULES
        )
    return BadRequest(f"the path {path!r} holds {named}; no route takes one")


def backend_block(base_url: str, name: str, secured: bool = False) -> str:
    """The ``terraform { backend "http" … }`` block for a state on this server; with
    access control on, where its credentials go (the environment: a block holds no
    secret, and every token has a name of its own)."""
    address = f"{base_url.rstrip('/')}/state/{name}"
    credentials = (
        "    # access control is on: set TF_HTTP_USERNAME and TF_HTTP_PASSWORD to a token's\n"
        "    # name and secret (statekeeper token create), or any name and an OIDC JWT\n"
        if secured
        else ""
    )
    return (
        'terraform {\n  backend "http" {\n'
        f'    address        = "{address}"\n'
        f'    lock_address   = "{address}"\n'
        f'    unlock_address = "{address}"\n'
        f"{credentials}"
        "  }\n}\n"
    )
