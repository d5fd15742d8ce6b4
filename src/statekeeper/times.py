"""Times as Terraform writes them (RFC 3339, as Go marshals ``time.Time``), and the clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["format_rfc3339", "parse_rfc3339", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


# Go writes RFC 3339 with up to nine fractional digits; Python's parser takes six.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 time with a zone, as Go's ``time.Time`` marshals it."""
    m = _RFC3339.match(text)
    if not m:
        raise ValueError(f"{text!r} is not an RFC 3339 time with a zone")
    date, clock, frac, zone = m.groups()
    frac = (frac or "0")[:6].ljust(6, "0")
    zone = "+00:00" if zone in ("Z", "z") else zone
    parsed = datetime.fromisoformat(f"{date}T{clock}.{frac}{zone}")
    try:
        # Times are shown and stored in UTC; one outside UTC's years 1-9999
        # would fail there (a 500 on the next conflict) instead of here.
        parsed.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{text!r} is outside the years 1-9999 in UTC") from exc
    return parsed


def format_rfc3339(when: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, the form Go and Terraform accept."""
    text = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"
