"""The HTTP floor: a bare Starlette app answering the state protocol without storage.

LOCK/UNLOCK answer 200, POST keeps the body in memory, GET returns the last
body (a loopback copy of the same bytes). Run under uvicorn with the settings
``statekeeper serve`` uses, so the only difference is statekeeper's own work.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_bodies: dict[str, bytes] = {}


async def state(request: Request) -> Response:
    name = request.path_params["name"]
    if request.method == "GET":
        body = _bodies.get(name)
        if body is None:
            return Response(b"", status_code=404)
        return Response(body, media_type="application/json")
    data = await request.body()
    if request.method in ("POST", "PUT"):
        _bodies[name] = data
        return Response(b"{}", media_type="application/json")
    return Response(data, media_type="application/json")


async def health(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(
    routes=[
        Route("/state/{name:path}", state, methods=["GET", "POST", "PUT", "LOCK", "UNLOCK"]),
        Route("/healthz", health),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
