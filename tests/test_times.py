"""The one duration grammar: what it reads, what it refuses, and round trips."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statekeeper.errors import BadRequest
from statekeeper.times import DURATION_GRAMMAR, MAX_DURATION_DAYS, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0),
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("1h30m", 5400),
        ("1w2d3h4m5s", 604800 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        (" 2H ", 7200),
        ("90m", 5400),
    ],
)
def test_reads(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    [
        *("", "2", "h", "2x", "-1h", "1h 30m", "30m1h", "1h1h", "1.5h", "90 years", "1hx"),
        # ASCII only, as the API's published pattern: another script's digit, the long s.
        *("\u0661h", "1\u017f"),
    ],
)
def test_refuses_naming_the_grammar(text: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_duration(text, what="--older-than")
    assert caught.value.exit_code == 2
    assert f"--older-than {text!r} is not a duration" in caught.value.message
    assert DURATION_GRAMMAR in caught.value.message


def test_formats_canonically() -> None:
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert format_duration(timedelta(days=9, seconds=1)) == "1w2d1s"


# Up to 1000 of each unit: at most about 30 years, inside the hundred-year bound.
_counts = st.integers(min_value=0, max_value=1000)


@given(st.integers(min_value=0, max_value=10**9))
def test_format_then_parse_is_identity(seconds: int) -> None:
    duration = timedelta(seconds=seconds)
    assert parse_duration(format_duration(duration)) == duration


@given(st.lists(_counts, min_size=5, max_size=5), st.sets(st.sampled_from("wdhms"), min_size=1))
def test_parse_then_format_is_canonical(counts: list[int], units: set[str]) -> None:
    text = "".join(f"{n}{u}" for n, u in zip(counts, "wdhms", strict=True) if u in units)
    parsed = parse_duration(text)
    canonical = format_duration(parsed)
    assert parse_duration(canonical) == parsed
    assert canonical == format_duration(parse_duration(canonical))


def test_past_a_hundred_years_is_refused_not_overflowed() -> None:
    assert parse_duration(f"{MAX_DURATION_DAYS}d") == timedelta(days=MAX_DURATION_DAYS)
    with pytest.raises(BadRequest, match="longer than 36500 days"):
        parse_duration(f"{MAX_DURATION_DAYS + 1}d")
    with pytest.raises(BadRequest):
        parse_duration("999999999999w")
