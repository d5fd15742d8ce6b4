"""The ASGI application: Terraform's protocol, the JSON API and health checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from statekeeper import __version__
from statekeeper.app import Services
from statekeeper.server import admin_api, api, history_api, hooks_api, tfhttp, ui
from statekeeper.server.auth import AuthMiddleware
from statekeeper.server.denials import Denials
from statekeeper.server.errors import ErrorGuard, install_handlers
from statekeeper.server.health import Readiness, healthz, readyz
from statekeeper.server.limits import ControlBodyMiddleware, TimeoutMiddleware
from statekeeper.server.lockwait import LockWaits
from statekeeper.server.scrape import metrics_endpoint
from statekeeper.server.workers import Workers, local_stores, threads_for
from statekeeper.state.leases import LeaseSweeper
from statekeeper.state.prune import PruneTask
from statekeeper.storage.masterkeys import remote_master_key
from statekeeper.storage.sqlite.database import syncs_owed
from statekeeper.telemetry.access import AccessMiddleware

__all__ = ["create_app"]


def _lifespan(
    services: Services, denials: Denials, workers: Workers
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = LeaseSweeper(services.locks)
        sweeper.start()  # only where the lock policy sets a lease
        interval = services.settings.history.prune_interval
        pruning = PruneTask(services, interval) if interval else None
        if pruning is not None:
            pruning.start()
        yield
        if pruning is not None:
            await run_in_threadpool(pruning.stop)
        await run_in_threadpool(sweeper.close)
        app.state.readiness.close()
        workers.close()
        # uvicorn re-raises SIGTERM after its graceful shutdown, so the `finally`
        # of `serve` may never run: pending audit events are written here.
        await run_in_threadpool(denials.flush)
        await run_in_threadpool(services.audit.close)

    return lifespan


class _App(FastAPI):
    """FastAPI behind statekeeper's own layers (``front``), which every HTTP request
    goes through first; Terraform's requests are answered there, before FastAPI's."""

    front: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the lifespan, websockets
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # where the routes find the services, as FastAPI sets it
        await self.front(scope, receive, send)

    async def behind(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI itself: its error and exception layers, the router."""
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document without the 422 it adds to routes: a parameter or body its
        models refuse is answered 400 ``invalid_request`` (``server/errors.py``), which
        each route's 400 already describes. Our own 422 (``ERRORS``: bytes that are no
        state) stays."""
        if self.openapi_schema is None:
            schema = super().openapi()
            fastapi_422 = {"$ref": "#/components/schemas/HTTPValidationError"}
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.get("responses", {})
                    answer = responses.get("422", {}).get("content", {}).get("application/json")
                    if answer is not None and answer.get("schema") == fastapi_422:
                        del responses["422"]
            schemas = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
        return super().openapi()


def create_app(services: Services, *, allow_anonymous: bool = True) -> FastAPI:
    """The ASGI app. ``allow_anonymous``: callers need no credentials while no tokens
    or OIDC are configured (only ``serve`` on loopback should leave it on)."""
    denials = Denials(services.events.emit)
    stores = (services.settings.store_url, services.settings.locks_url)
    workers = Workers(
        threads_for(*stores),
        # A KMS master key is called on the network when a data key is not cached.
        inline=local_stores(*stores) and not remote_master_key(services.settings.master_key),
        owing=syncs_owed,
    )
    app = _App(
        title="statekeeper",
        version=__version__,
        summary="Remote state for Terraform and OpenTofu",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served by the UI's router from vendored assets (air-gapped)
        redoc_url=None,
        lifespan=_lifespan(services, denials, workers),
    )
    app.state.services = services
    app.state.workers = workers
    app.state.lock_waits = LockWaits(services.settings.lock_wait)
    app.state.readiness = Readiness(
        services.store.probe, services.lock_table.probe, services.settings.ready_timeout
    )
    install_handlers(app)
    # First: Terraform's requests, nearly all of the traffic, match without trying others.
    terraform = tfhttp.routes()
    app.router.routes[0:0] = terraform
    app.include_router(api.router)
    app.add_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    app.include_router(admin_api.router)
    app.include_router(history_api.router)
    app.include_router(hooks_api.router)
    app.include_router(ui.router)
    # Innermost first. No body is read before the caller is authenticated; the
    # timeout covers authentication too; an unexpected error gets its 500 with the
    # request's ID; the access line and request metrics see every answer.
    front: ASGIApp = tfhttp.TerraformRoutes(app.behind, terraform)
    front = ControlBodyMiddleware(front)
    front = AuthMiddleware(
        front, services=services, denials=denials, allow_anonymous=allow_anonymous
    )
    front = TimeoutMiddleware(front, seconds=services.settings.request_timeout)
    front = ErrorGuard(front)
    app.front = AccessMiddleware(front, routes=lambda: app.router.routes, metrics=services.metrics)
    return app
