"""Credentials in URLs, masked wherever a URL reaches a message.

A URL may carry a password (``--server http://admin:SECRET@host``,
``AWS_ENDPOINT_URL=http://user:SECRET@minio:9000``), and a URL is what an error
names first. Messages show it through :func:`redacted`.
"""

from __future__ import annotations

import re

__all__ = ["redact_urls", "redacted"]

# The userinfo of a URL: up to the last "@" before the path (a password may hold "@");
# the scheme is optional, since a URL refused for lacking one is still shown.
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?)([^/?#]*)@")
# A URL inside a message (a library's, quoting the URL it called): up to a space or quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def redacted(url: str) -> str:
    """``url`` as messages show it: a password in it (``http://admin:SECRET@host``)
    becomes ``***``, and so does a user name standing alone (it may be a token)."""
    m = _USERINFO.match(url)
    if m is None:
        return url
    user, sep, _ = m.group(2).partition(":")
    return f"{m.group(1)}{user + ':***' if sep else '***'}@{url[m.end() :]}"


def redact_urls(text: str) -> str:
    """``text`` with every URL in it :func:`redacted`."""
    return _URL.sub(lambda m: redacted(m.group()), text)
