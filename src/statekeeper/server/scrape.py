"""``/metrics``: Prometheus' text format, on the main port or on a listener of its own.

On the main port a scraper needs the ``metrics`` permission (a token with the
grant ``**:metrics``; any grant on ``**`` includes it). ``metrics_listen``
opens a second listener that serves only the metrics and asks for nothing:
bind it where only the scraper reaches it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
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


class _Quiet(WSGIRequestHandler):
    """No line on stderr per scrape: the access log is the main port's."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingWSGIServer):
    """prometheus_client's server (a thread per request, daemon threads), in the family
    of its address: the class says AF_INET, and an IPv6 host needs AF_INET6."""

    def __init__(self, host: str, port: int) -> None:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        self.address_family = family
        super().__init__((str(address[0]), port), _Quiet)


class MetricsListener:
    """``metrics_listen``: a thread-per-request WSGI server (prometheus_client's) of our
    own making, serving only :func:`_only_metrics`.

    Built here rather than with ``start_http_server``, which starts serving its own app
    (the metrics on every path) before a caller can swap it: this server has our app
    before it answers anything. The constructor binds and listens (a port in use
    refuses the start); :meth:`start` serves, on a daemon thread.
    """

    def __init__(self, listen: str, metrics: Metrics) -> None:
        host, sep, port = listen.rpartition(":")
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise ConfigError(f"metrics_listen = {listen!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
        host = host.strip("[]") or "0.0.0.0"
        try:
            self.server = _Server(host, int(port))
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {listen}: {exc.strerror or exc}; choose another "
                "metrics_listen"
            ) from exc
        self.server.set_app(_only_metrics(make_wsgi_app(metrics.registry)))
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="metrics-listener", daemon=True
        )

    def start(self) -> MetricsListener:
        """Serve: connections queued since the port opened are answered first."""
        self.thread.start()
        return self

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()
