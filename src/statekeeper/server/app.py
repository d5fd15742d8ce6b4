"""The ASGI application: Terraform's protocol, the JSON API and health checks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from statekeeper import __version__
from statekeeper.app import Services
from statekeeper.server import admin_api, api, tfhttp, ui
from statekeeper.server.auth import AuthMiddleware
from statekeeper.server.errors import install_handlers
from statekeeper.server.limits import TimeoutMiddleware

__all__ = ["create_app"]


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


def _lifespan(services: Services) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # uvicorn re-raises SIGTERM after its graceful shutdown, so the `finally`
        # of `serve` may never run: pending audit events are written here.
        await run_in_threadpool(services.audit.close)

    return lifespan


def create_app(services: Services, *, allow_anonymous: bool = True) -> FastAPI:
    """The ASGI app. ``allow_anonymous``: callers need no credentials while no tokens
    or OIDC are configured (only ``serve`` on loopback should leave it on)."""
    app = FastAPI(
        title="statekeeper",
        version=__version__,
        summary="Remote state for Terraform and OpenTofu",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served by the UI's router from vendored assets (air-gapped)
        redoc_url=None,
        lifespan=_lifespan(services),
    )
    app.state.services = services
    install_handlers(app)
    for route in tfhttp.routes():
        app.router.routes.append(route)
    app.include_router(api.router)
    app.add_route("/healthz", _health, methods=["GET"], include_in_schema=False)
    app.include_router(admin_api.router)
    app.include_router(ui.router)
    # Outermost last: the timeout covers authentication too.
    app.add_middleware(AuthMiddleware, services=services, allow_anonymous=allow_anonymous)
    app.add_middleware(TimeoutMiddleware, seconds=services.settings.request_timeout)
    return app
