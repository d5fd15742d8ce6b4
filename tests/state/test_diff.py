"""Resource-level diffs: addresses, attribute paths, masking of sensitive values."""

from __future__ import annotations

import json

import pytest

from statekeeper.errors import EncryptedState
from statekeeper.state.diff import describe_state, diff_states, format_path
from statekeeper.testing.statefiles import instance, state_bytes

PW = [[{"type": "get_attr", "value": "password"}]]
NESTED = [
    [
        {"type": "get_attr", "value": "tags"},
        {"type": "index", "value": {"value": "token", "type": "string"}},
    ]
]


def test_added_removed_and_changed_instances() -> None:
    old = state_bytes(
        1,
        resources=[
            instance("terraform_data", "keep", {"id": "1", "input": "a"}),
            instance("terraform_data", "gone", {"id": "2"}),
            instance("terraform_data", "same", {"id": "3"}, module="module.m"),
        ],
    )
    new = state_bytes(
        2,
        resources=[
            instance("terraform_data", "keep", {"id": "1", "input": "b"}),
            instance("terraform_data", "new", {"id": "4"}, index_key="k"),
            instance("terraform_data", "same", {"id": "3"}, module="module.m"),
        ],
    )
    d = diff_states(old, new)
    assert d.added == ['terraform_data.new["k"]']
    assert d.removed == ["terraform_data.gone"]
    assert [c.address for c in d.changed] == ["terraform_data.keep"]
    (change,) = d.changed[0].changes
    assert (change.path, change.before, change.after, change.sensitive) == (
        "input",
        "a",
        "b",
        False,
    )
    assert d.resources_changed == 3
    assert d.model_dump()["serial"] == {"before": 1, "after": 2}


def test_nested_paths_and_list_indices() -> None:
    old = state_bytes(1, resources=[instance("t", "x", {"m": {"a b": 1, "c": [1, 2]}})])
    new = state_bytes(2, resources=[instance("t", "x", {"m": {"a b": 2, "c": [1, 3]}})])
    paths = [c.path for c in diff_states(old, new).changed[0].changes]
    assert paths == ['m["a b"]', "m.c[1]"]
    assert format_path(("list", 0, "x")) == "list[0].x"


def test_sensitive_attributes_are_masked_in_json_and_values() -> None:
    old = state_bytes(
        1,
        resources=[
            instance(
                "t",
                "db",
                {"password": "hunter2", "tags": {"token": "t1", "n": "a"}},
                sensitive=PW + NESTED,
            )
        ],
    )
    new = state_bytes(
        2,
        resources=[
            instance(
                "t",
                "db",
                {"password": "hunter3", "tags": {"token": "t2", "n": "b"}},
                sensitive=PW + NESTED,
            )
        ],
    )
    d = diff_states(old, new)
    text = d.model_dump_json()
    for secret in ("hunter2", "hunter3", "t1", "t2"):
        assert secret not in text
    by_path = {c["path"]: c for c in d.model_dump()["changed"][0]["changes"]}
    assert by_path["password"] == {
        "path": "password",
        "before": None,
        "after": None,
        "sensitive": True,
    }
    assert by_path["tags.token"]["sensitive"] is True
    assert by_path["tags.n"] == {"path": "tags.n", "before": "a", "after": "b", "sensitive": False}


def test_a_container_holding_a_sensitive_value_is_masked() -> None:
    old = state_bytes(
        1, resources=[instance("t", "x", {"tags": {"token": "t1"}}, sensitive=NESTED)]
    )
    new = state_bytes(
        2, resources=[instance("t", "x", {"tags": {"token": "t1", "n": 1}}, sensitive=NESTED)]
    )
    # "tags.n" is added: not sensitive itself. A whole replaced "tags" would be.
    (c,) = diff_states(old, new).changed[0].changes
    assert c.path == "tags.n" and not c.sensitive
    newer = state_bytes(3, resources=[instance("t", "x", {"tags": None}, sensitive=NESTED)])
    (c,) = diff_states(new, newer).changed[0].changes
    assert c.path == "tags" and c.sensitive


def test_sensitive_outputs_are_masked() -> None:
    old = state_bytes(
        1,
        outputs={
            "pw": {"value": "s1", "type": "string", "sensitive": True},
            "o": {"value": 1, "type": "number"},
        },
    )
    new = state_bytes(
        2,
        outputs={
            "pw": {"value": "s2", "type": "string", "sensitive": True},
            "n": {"value": 2, "type": "number"},
        },
    )
    d = diff_states(old, new).model_dump()
    assert "s1" not in json.dumps(d) and "s2" not in json.dumps(d)
    assert {o["name"]: o["action"] for o in d["outputs"]} == {
        "n": "added",
        "o": "removed",
        "pw": "changed",
    }
    shown = describe_state(new)
    assert shown.outputs is not None
    assert shown.outputs["pw"].model_dump() == {"value": None, "sensitive": True}
    assert shown.outputs["n"].model_dump() == {"value": 2, "sensitive": False}


def test_no_previous_state_means_everything_added() -> None:
    d = diff_states(None, state_bytes(1, resources=[instance("t", "a", {})]))
    assert d.added == ["t.a"] and d.resources_changed == 1


def test_identical_states_have_an_empty_diff() -> None:
    data = state_bytes(1, resources=[instance("t", "a", {"x": 1})])
    assert diff_states(data, data).empty


def test_encrypted_states_cannot_be_diffed() -> None:
    envelope = json.dumps(
        {
            "serial": 2,
            "lineage": "l",
            "meta": {},
            "encrypted_data": "AAAA",
            "encryption_version": "v0",
        }
    ).encode()
    with pytest.raises(EncryptedState, match="encrypted by OpenTofu"):
        diff_states(state_bytes(1), envelope)
    assert describe_state(envelope).encrypted is True
