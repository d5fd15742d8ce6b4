"""The sender's HTTP: keep-alive connections to receivers and one signed POST.

Apart from :mod:`statekeeper.hooks.delivery` because the standard library's
HTTP client (with ssl and email) is a large import: the sender thread and
``hooks test`` import it when they send, not every process that builds the
webhooks (each CLI run on the embedded store does).
"""

from __future__ import annotations

import http.client
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from statekeeper import __version__
from statekeeper.hooks.guard import check_destination
from statekeeper.hooks.signing import HEADER, sign

if TYPE_CHECKING:
    from statekeeper.hooks.model import Policy, Subscription

__all__ = ["TRANSPORT_ERRORS", "Connections", "post"]

#: What a delivery that never got an answer raises.
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class Connections:
    """Keep-alive connections to receivers, one per scheme, host and port.

    The standard library's client: a delivery is one small POST, and a general
    HTTP client costs several times its CPU. Redirects are not followed (an
    answer of 3xx is a failed delivery). Used by one thread at a time.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._open: dict[tuple[str, str, int], http.client.HTTPConnection] = {}

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        parts = urlsplit(url)
        https = parts.scheme == "https"
        host = parts.hostname or ""
        key = (parts.scheme, host, parts.port or (443 if https else 80))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for reused in (True, False):
            conn = self._open.pop(key, None) if reused else None
            if conn is None:
                reused = False
                conn = (
                    http.client.HTTPSConnection(host, key[2], timeout=self.timeout)
                    if https
                    else http.client.HTTPConnection(host, key[2], timeout=self.timeout)
                )
            try:
                conn.request("POST", target, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
            except TRANSPORT_ERRORS:
                conn.close()
                if reused:
                    continue  # the receiver closed the idle connection: once more, afresh
                raise
            if response.will_close:
                conn.close()
            else:
                self._open[key] = conn
            status: int = response.status
            return status
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self._open.values():
            conn.close()
        self._open.clear()


def post(
    sub: Subscription, body: bytes, event_id: str, policy: Policy, connections: Connections
) -> int:
    """Send one signed delivery; the HTTP status (raises StatekeeperError or a transport
    error)."""
    check_destination(sub.url, policy.allow)
    headers = {
        "Content-Type": "application/cloudevents+json",
        HEADER: sign(sub.secret, body),
        "Statekeeper-Event-Id": event_id,
        "User-Agent": f"statekeeper/{__version__}",
    }
    return connections.post(sub.url, body, headers)
