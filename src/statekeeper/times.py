"""Times as Terraform writes them (RFC 3339, as Go marshals ``time.Time``), the clock,
and the one duration grammar (``30s 15m 2h 1d 1w 1h30m``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from statekeeper.patterns import any_case, whole

__all__ = [
    "DURATION_GRAMMAR",
    "DURATION_PATTERN",
    "MAX_DURATION_DAYS",
    "POSITIVE_DURATION_PATTERN",
    "format_duration",
    "format_rfc3339",
    "parse_duration",
    "parse_rfc3339",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


# Go writes RFC 3339 with up to nine fractional digits; Python's parser takes six.
# ASCII digits to the very end, as Go reads it: without re.ASCII \d also took other
# scripts' digits (int() reads them), and $ a newline after the zone.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})\Z",
    re.ASCII,
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
    """RFC 3339 in UTC with a ``Z``, the form Go and Terraform accept; the fraction
    of a second without its trailing zeros (none for a whole second)."""
    if when.tzinfo is not UTC:
        when = when.astimezone(UTC)
    # isoformat, not strftime: every event's time is formatted for the audit trail and
    # the log on the request path, and strftime costs several times as much.
    text = when.replace(tzinfo=None).isoformat()
    if when.microsecond:
        text = text.rstrip("0")
    return text + "Z"


# Durations: one grammar wherever the CLI, the API or a setting reads one.
DURATION_GRAMMAR = (
    "a whole number and a unit (w, d, h, m, s), several in descending order: "
    "30s, 15m, 2h, 1d, 1w, 1h30m"
)
_DURATION_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
# ASCII only: without it \d took other scripts' digits and IGNORECASE read the long s
# (U+017F) as s, none of which the published pattern (below) takes.
_DURATION = re.compile(
    "^" + "".join(rf"(?:(\d+){unit})?" for unit, _ in _DURATION_UNITS) + r"\Z",
    re.IGNORECASE | re.ASCII,
)


#: The longest duration read: a hundred years.
MAX_DURATION_DAYS = 36500
#: What :func:`parse_duration` takes, as a JSON Schema pattern (:mod:`statekeeper.patterns`),
#: but for the longest: a number and a unit, in ASCII (ECMA-262's \d is ASCII digits).
_DURATION_BODY = (
    r"\s*(?=[0-9])"
    + "".join(f"(?:[0-9]+{any_case(unit)})?" for unit, _ in _DURATION_UNITS)
    + r"\s*"
)
DURATION_PATTERN = whole(_DURATION_BODY)
#: A duration longer than 0s (a token's lifetime): one of its numbers is not zero.
POSITIVE_DURATION_PATTERN = whole(rf"(?=[\s\S]*[1-9]){_DURATION_BODY}")


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    """``30s``, ``15m``, ``2h``, ``1d``, ``1w`` and sums in descending order (``1h30m``).

    Raises :class:`~statekeeper.errors.BadRequest` (exit 2, HTTP 400) naming the
    grammar; ``what`` names the option or field in that message.
    """
    from statekeeper.errors import BadRequest

    m = _DURATION.match(text.strip())
    if m is None or not any(m.groups()):
        raise BadRequest(f"{what} {text!r} is not a duration: write {DURATION_GRAMMAR}")
    seconds = sum(
        int(count) * unit
        for count, (_, unit) in zip(m.groups(), _DURATION_UNITS, strict=True)
        if count
    )
    # Longer is no lock age or token lifetime, and added to now it would run past
    # the year 9999 (an OverflowError, which must be a 400, not a 500).
    if seconds > MAX_DURATION_DAYS * 86400:
        raise BadRequest(f"{what} {text!r} is longer than {MAX_DURATION_DAYS} days")
    return timedelta(seconds=seconds)


def format_duration(duration: timedelta) -> str:
    """The canonical text :func:`parse_duration` reads back: ``1h30m``, ``0s``.

    Fractions of a second are dropped; a negative duration is an error.
    """
    seconds = int(duration.total_seconds())
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {duration}")
    parts = []
    for unit, size in _DURATION_UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def format_age(seconds: float) -> str:
    """An age for people: ``42s``, ``3m12s``, ``2h05m``, ``4d02h`` (two units at most)."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
