"""``/metrics``: Prometheus' text format, on the main port or on a listener of its own.

On the main port a scraper needs the ``metrics`` permission (a token with the
grant ``**:metrics``; any grant on ``**`` includes it). ``metrics_listen``
opens a second listener that serves only the metrics and asks for nothing:
bind it where only the scraper reaches it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import make_wsgi_app, start_http_server
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from statekeeper.app import Services
from statekeeper.errors import ConfigError, NotFound
from statekeeper.security.policy import Permission, require
from statekeeper.server.tfhttp import caller_of
from statekeeper.telemetry.metrics import CONTENT_TYPE, Metrics

__all__ = ["MetricsListener", "metrics_endpoint"]


async def metrics_endpoint(request: Request) -> Response:
    services: Services = request.app.state.services
    if services.metrics is None:
        raise NotFound("metrics are off on this server (metrics = false)")
    require(services.policy, caller_of(request), None, Permission.METRICS, "read the metrics of")
    body = await run_in_threadpool(services.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)


def _only_metrics(app: WSGIApplication) -> WSGIApplication:
    """prometheus_client's app answers the metrics on every path: a health check
    pointed at this port by mistake (``/healthz``) would be 200 whatever the server."""

    def only_metrics(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"this listener (metrics_listen) serves only /metrics\n"]
        return app(environ, start_response)

    return only_metrics


class MetricsListener:
    """``metrics_listen``: prometheus_client's own HTTP server, on a thread."""

    def __init__(self, listen: str, metrics: Metrics) -> None:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"metrics_listen = {listen!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
        host = host.strip("[]") or "0.0.0.0"
        try:
            server, thread = start_http_server(int(port), host, registry=metrics.registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {listen}: {exc.strerror or exc}; choose another "
                "metrics_listen"
            ) from exc
        server.set_app(_only_metrics(make_wsgi_app(metrics.registry)))
        self.server: WSGIServer = server
        self.thread: threading.Thread = thread

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
