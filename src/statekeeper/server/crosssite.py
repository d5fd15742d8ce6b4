"""Writes a browser sends from another site's page are refused.

A browser attaches credentials it holds for the server to a request another
site's page makes: Basic credentials typed once into its prompt (every 401
carries a ``Basic`` challenge, which Terraform's ``username``/``password`` use)
are sent again with a form's POST from any page. Such a form needs no preflight
when its body is ``text/plain``, and ``POST /state/NAME`` reads the body as the
state whatever its type (Terraform's client is the judge of that, not the
header). So a page could write a state with its visitor's grants.

The check is the one Go's ``net/http.CrossOriginProtection`` makes, which
relies on what browsers send and on nothing any other client sends:

- a safe method (GET, HEAD, OPTIONS) passes: it changes nothing, and the page
  cannot read the answer (the server sends no CORS header);
- ``Sec-Fetch-Site`` (sent by every current browser) must be ``same-origin``
  or ``none`` (a URL typed or bookmarked);
- without it (an older browser), an ``Origin``, when present, must name the
  host the request is addressed to;
- a request with neither is not from a browser's page (Terraform, the CLI,
  curl, scripts) and passes.

The UI's forms are checked so too, with a page of their own, and carry a CSRF
token as well (``server/ui/actions.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from statekeeper.errors import Forbidden

__all__ = ["cross_site_write"]

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_FROM_HERE = frozenset({"same-origin", "none"})


def cross_site_write(method: str, headers: Iterable[tuple[bytes, bytes]]) -> Forbidden | None:
    """Why a request that changes something is refused as another site's page's,
    or None when it may go on to authentication."""
    if method in _SAFE:
        return None
    site = origin = host = None
    for key, value in headers:
        if key == b"sec-fetch-site":
            site = value.decode("latin-1").lower()
        elif key == b"origin":
            origin = value.decode("latin-1")
        elif key == b"host":
            host = value.decode("latin-1")
    if site is not None:
        if site in _FROM_HERE:
            return None
        return _refused(f"a {site} page (Sec-Fetch-Site: {site})")
    if origin is None:
        return None
    _, _, authority = origin.partition("://")
    if host is not None and authority.lower() == host.lower():
        return None
    return _refused(f"the web page at {origin!r}")


def _refused(source: str) -> Forbidden:
    return Forbidden(
        f"the request comes from {source}: the server takes no write from another "
        "site's page, whose browser may attach your credentials; send it from "
        "Terraform, the CLI or a script, or use the server's own UI "
        "(docs/security.md#cross-site-requests)"
    )
