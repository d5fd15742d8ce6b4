"""Terraform's S3 layout in one module, and the state names it reserves.

The facts are spelled out literally here, as Terraform's S3 backend writes
them, so that the module is checked against Terraform rather than itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statekeeper.errors import InvalidStateName
from statekeeper.terraform import layout
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName

SRC = Path(__file__).resolve().parents[2] / "src"


def test_the_facts_are_terraforms() -> None:
    assert layout.LOCK_FILE_SUFFIX == ".tflock"
    assert layout.DIGEST_SUFFIX == "-md5"
    assert layout.DEFAULT_WORKSPACE_PREFIX == "env:"
    assert layout.lock_path("tfstate", "env:/dev/proj/terraform.tfstate") == (
        "tfstate/env:/dev/proj/terraform.tfstate"
    )
    assert layout.digest_id("b", "team/app.tfstate") == "b/team/app.tfstate-md5"
    assert layout.lock_file_key("p/app.tfstate") == "p/app.tfstate.tflock"
    assert layout.state_of_lock_file("p/app.tfstate.tflock") == "p/app.tfstate"
    assert layout.state_of_digest_id("b/app.tfstate-md5") == "b/app.tfstate"
    assert layout.LOCK_FIELDS == ("ID", "Operation", "Info", "Who", "Version", "Created", "Path")


def test_lockinfo_marshals_in_the_layouts_field_order() -> None:
    body = LockInfo.new("OperationTypeApply", "alice@ci").body.decode()
    keys = re.findall(r'"(\w+)":', body)
    assert tuple(keys) == layout.LOCK_FIELDS


@pytest.mark.parametrize("spelling", [".tflock", "-md5"])
def test_each_suffix_is_spelled_once_in_the_source(spelling: str) -> None:
    found = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if spelling in line
    ]
    assert len(found) == 1 and found[0].startswith("statekeeper/terraform/layout.py:"), found


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("team/app.tfstate.tflock", "'.tflock'"),
        ("a.tflock", "'.tflock'"),
        ("team/app.tfstate-md5", "'-md5'"),
        ("x-md5", "'-md5'"),
        (".statekeeper-doctor/probe-1", "'.statekeeper-doctor/'"),
    ],
)
def test_reserved_names_are_refused_naming_the_rule(name: str, rule: str) -> None:
    with pytest.raises(InvalidStateName) as refused:
        StateName(name)
    assert rule in refused.value.message
    assert "reserved" in refused.value.message
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "name",
    [
        "team/app.tfstate",
        "env:/dev/team/app.tfstate",  # a workspace state is a state
        "a.tflock/b.tfstate",  # the suffix only matters at the end
        "x-md5/y",
        "app.tfstate.TFLOCK",  # S3 keys are case-sensitive: no collision
        "md5",
        ".statekeeper-doctor",
    ],
)
def test_names_that_only_look_reserved_are_states(name: str) -> None:
    assert str(StateName(name)) == name


# Segments built from the letters of names and the pieces of the reserved suffixes.
_SEGMENT = (
    st.lists(st.sampled_from([*"ab.:=+-_", "tflock", "md5", "-md5", ".tflock"]), min_size=1)
    .map("".join)
    .filter(lambda s: s not in (".", ".."))
)
_NAMES = st.lists(_SEGMENT, min_size=1, max_size=4).map("/".join)


def _accepted(name: str) -> bool:
    try:
        StateName(name)
    except InvalidStateName:
        return False
    return True


@given(name=_NAMES)
def test_a_name_is_refused_exactly_when_the_layout_reserves_it(name: str) -> None:
    # The names here pass every other rule, so the layout alone decides.
    assert _accepted(name) == (layout.reserved_reason(name) is None)


@given(a=_NAMES, b=_NAMES, prefix=st.sampled_from(["", "p/", "team/env:/"]))
def test_no_state_can_be_another_states_lock_file_or_digest(a: str, b: str, prefix: str) -> None:
    """For every two accepted names, under any store prefix, the derived keys never meet."""
    if not (_accepted(a) and _accepted(b)):
        return
    assert layout.lock_file_key(prefix + a) != prefix + b
    assert layout.lock_path("bucket", prefix + b) != layout.digest_id("bucket", prefix + a)
    assert not layout.is_lock_file(prefix + b)
    assert not layout.is_digest_id(layout.lock_path("bucket", prefix + b))
