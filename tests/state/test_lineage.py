"""The serial/lineage guard as a table: Terraform's ``CheckValidImport`` cases."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from statekeeper.state.lineage import Verdict, compare, explain


@dataclass(frozen=True)
class S:
    serial: int
    lineage: str


@pytest.mark.parametrize(
    ("current", "incoming", "same_bytes", "verdict"),
    [
        (None, S(1, "a"), False, Verdict.FIRST),
        (None, S(0, ""), False, Verdict.FIRST),
        (S(3, "a"), S(3, "a"), True, Verdict.IDENTICAL),
        (S(3, "a"), S(4, "a"), False, Verdict.NEWER),
        (S(3, "a"), S(30, "a"), False, Verdict.NEWER),
        (S(3, "a"), S(4, "b"), False, Verdict.OTHER_LINEAGE),
        (S(3, "a"), S(1, "b"), False, Verdict.OTHER_LINEAGE),  # lineage is checked first
        (S(3, "a"), S(2, "a"), False, Verdict.OLDER_SERIAL),
        (S(3, "a"), S(3, "a"), False, Verdict.SAME_SERIAL_OTHER_CONTENT),
        # Either lineage blank: allowed, as in Terraform.
        (S(3, ""), S(4, "b"), False, Verdict.NEWER),
        (S(3, "a"), S(4, ""), False, Verdict.NEWER),
        (S(3, ""), S(2, "b"), False, Verdict.OLDER_SERIAL),
    ],
)
def test_compare(current: S | None, incoming: S, same_bytes: bool, verdict: Verdict) -> None:
    assert compare(current, incoming, same_bytes=same_bytes) is verdict


@pytest.mark.parametrize(
    ("verdict", "accepted"),
    [
        (Verdict.FIRST, True),
        (Verdict.NEWER, True),
        (Verdict.IDENTICAL, True),
        (Verdict.OTHER_LINEAGE, False),
        (Verdict.OLDER_SERIAL, False),
        (Verdict.SAME_SERIAL_OTHER_CONTENT, False),
    ],
)
def test_accepted(verdict: Verdict, accepted: bool) -> None:
    assert verdict.accepted is accepted


@pytest.mark.parametrize(
    ("verdict", "current", "incoming", "wording"),
    [
        (
            Verdict.OTHER_LINEAGE,
            S(3, "B"),
            S(4, "A"),
            'cannot import state with lineage "A" over unrelated state with lineage "B"',
        ),
        (
            Verdict.OLDER_SERIAL,
            S(8, "A"),
            S(7, "A"),
            "cannot import state with serial 7 over newer state with serial 8",
        ),
        (
            Verdict.SAME_SERIAL_OTHER_CONTENT,
            S(5, "A"),
            S(5, "A"),
            "cannot overwrite existing state with serial 5 with a different state that has "
            "the same serial",
        ),
    ],
)
def test_explain_uses_terraforms_wording_and_says_what_to_do(
    verdict: Verdict, current: S, incoming: S, wording: str
) -> None:
    text = explain(verdict, current, incoming)
    assert text.startswith(wording)
    assert "pull the current state" in text


@pytest.mark.parametrize("verdict", [Verdict.FIRST, Verdict.NEWER, Verdict.IDENTICAL])
def test_explain_refuses_verdicts_that_are_not_refusals(verdict: Verdict) -> None:
    with pytest.raises(ValueError, match="not a refusal"):
        explain(verdict, S(1, "a"), S(1, "a"))
