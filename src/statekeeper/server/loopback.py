"""A server without access control answers this machine only.

``statekeeper serve`` with no tokens and no OIDC binds to loopback, and every
caller is ``anonymous`` with every permission. Binding to loopback keeps other
machines out, but not a web page open in a browser on this machine: it can send
a form's POST to ``http://127.0.0.1:8080/state/…`` (no preflight for a simple
request), and by DNS rebinding (a name of its own that comes to resolve to
127.0.0.1) it can read the answers as its own. So such a server also refuses a
request whose ``Host`` is not a loopback name (rebinding) and one whose
``Origin`` is not a loopback origin (a cross-site request). Terraform, the CLI
and curl send neither a foreign ``Host`` nor any ``Origin``; the UI's own pages
send a loopback one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from statekeeper.errors import BadRequest, Forbidden, StatekeeperError

__all__ = ["foreign_request", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.1``, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _hostname(authority: str) -> str:
    """``::1`` for ``[::1]:8080``, ``localhost`` for ``localhost:8080``."""
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    return authority.rpartition(":")[0] if authority.count(":") == 1 else authority


def foreign_request(headers: Iterable[tuple[bytes, bytes]]) -> StatekeeperError | None:
    """Why a server without access control refuses a request with these headers,
    or None when it comes from this machine's own programs and pages."""
    for key, value in headers:
        if key == b"host":
            host = value.decode("latin-1")
            if host and not is_loopback(_hostname(host)):
                return BadRequest(
                    f"the request is addressed to {host!r}: a server without access "
                    "control answers only localhost, 127.0.0.1 and [::1] (a name that "
                    "resolves here may be a web page's DNS rebinding); turn access "
                    "control on (docs/security.md) to serve other names"
                )
        elif key == b"origin":
            origin = value.decode("latin-1")
            scheme, _, authority = origin.partition("://")
            if scheme not in ("http", "https") or not is_loopback(_hostname(authority)):
                return Forbidden(
                    f"the request comes from the web page at {origin!r}: a server "
                    "without access control takes no request from another site's "
                    "page; turn access control on (docs/security.md) to allow it"
                )
    return None
