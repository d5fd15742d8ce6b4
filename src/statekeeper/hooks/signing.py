"""The ``Statekeeper-Signature`` header: HMAC-SHA256 over the timestamp and the body.

``Statekeeper-Signature: t=1733356800,v1=5257a869…`` where ``v1`` is the hex
HMAC-SHA256, keyed with the subscription's secret, of ``"{t}.{body}"`` (the
timestamp, a dot, and the raw request body), as Stripe signs its webhooks. A
receiver recomputes it, compares in constant time, and refuses a timestamp
more than :data:`REPLAY_WINDOW` seconds from its own clock, so that a captured
delivery cannot be replayed later. Several ``v1=`` entries may appear while a
secret is being rotated; any one matching is enough. A malformed header is
refused (False), never an exception: it is whatever the sender wrote.
"""

from __future__ import annotations

import hmac
import re
import time

__all__ = ["HEADER", "REPLAY_WINDOW", "sign", "verify"]

HEADER = "Statekeeper-Signature"
#: Seconds a receiver should accept between the signature's time and its own.
REPLAY_WINDOW = 300

# ASCII digits only: str.isdigit() also takes "²" (which int() refuses) and
# other scripts' digits; and int() refuses more than 4300 digits.
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    message = b"%d.%s" % (timestamp, body)
    # One call into OpenSSL: an hmac.new object would be built and fed in Python.
    return hmac.digest(secret.encode(), message, "sha256").hex()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value for ``body`` sent now (or at ``timestamp``)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_mac(secret, t, body)}"


def verify(
    header: str, body: bytes, secret: str, *, window: int = REPLAY_WINDOW, now: float | None = None
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` within the replay window.

    The first ``t=`` is the timestamp, as in the receiver's code the docs print.
    """
    fields = [part.strip().partition("=") for part in header.split(",")]
    t = next((value for key, _, value in fields if key == "t"), "")
    if not _TIMESTAMP.fullmatch(t):
        return False
    timestamp = int(t)
    if abs((time.time() if now is None else now) - timestamp) > window:
        return False
    expected = _mac(secret, timestamp, body)
    # compare_digest raises TypeError on a str with a non-ASCII character, and
    # str.encode() on a lone surrogate (a header decoded with surrogateescape);
    # a non-ASCII value never matches hex, and whether it is ASCII tells nothing
    # about the secret.
    return any(
        value.isascii() and hmac.compare_digest(expected, value)
        for key, _, value in fields
        if key == "v1"
    )
