"""The values: state names, LockInfo as Go reads it, RFC 3339 times, state documents."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from statekeeper.errors import InvalidLockInfo, InvalidState, InvalidStateName, PayloadTooLarge
from statekeeper.state.version import StateVersion
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import NAME_RULES, StateName
from statekeeper.terraform.statedoc import StateDoc
from statekeeper.times import format_rfc3339, parse_rfc3339

# -- StateName -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "terraform.tfstate",
        "team/app/prod.tfstate",
        "env:/dev/project/terraform.tfstate",
        "a",
        "A-Z_0.9:=+x",
        "..a/b..",
        "x" * 1024,
        "/".join(["y" * 200] * 5)[:1024].rstrip("/"),
    ],
)
def test_valid_state_names(name: str) -> None:
    assert str(StateName(name)) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "is empty"),
        ("/a", "empty, '.' or '..' segment"),
        ("a/", "empty, '.' or '..' segment"),
        ("a//b", "empty, '.' or '..' segment"),
        (".", "empty, '.' or '..' segment"),
        ("..", "empty, '.' or '..' segment"),
        ("a/../b", "empty, '.' or '..' segment"),
        ("a/./b", "empty, '.' or '..' segment"),
        ("a b", "not allowed"),
        ("a\\b", "not allowed"),
        ("a\x00b", "not allowed"),
        ("caf\u00e9", "not allowed"),
        ("a?b", "not allowed"),
        ("a#b", "not allowed"),
        ("a%2Fb", "not allowed"),
        ("x" * 1025, "1025 bytes"),
    ],
)
def test_invalid_state_names_say_why_and_what_is_allowed(name: str, why: str) -> None:
    with pytest.raises(InvalidStateName) as err:
        StateName(name)
    assert why in err.value.message
    assert NAME_RULES in err.value.message
    assert err.value.status == 400


def test_state_names_order_and_compare_by_value() -> None:
    assert StateName("a") == StateName("a")
    assert sorted([StateName("b"), StateName("a")]) == [StateName("a"), StateName("b")]


# -- RFC 3339 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T11:13:27.558548621Z", datetime(2026, 11, 23, 11, 13, 27, 558548, UTC)),
        ("2026-11-23T11:13:27Z", datetime(2026, 11, 23, 11, 13, 27, tzinfo=UTC)),
        ("2026-11-23t11:13:27.5z", datetime(2026, 11, 23, 11, 13, 27, 500000, UTC)),
        (
            "2026-11-23T12:13:27.1+01:00",
            datetime(2026, 11, 23, 12, 13, 27, 100000, timezone(timedelta(hours=1))),
        ),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339_as_go_writes_it(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2024-01-01T00:00:00.123456",  # Python's naive isoformat(): no zone
        "2024-01-01",
        "2024-13-01T00:00:00Z",
        "2024-01-01T25:00:00Z",
        "yesterday",
        "9999-12-31T23:59:59-01:00",  # past year 9999 in UTC
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "2024-01-01T00:00:00Z\n",  # Go reads no newline after the zone
        # Arabic-Indic digits: int() reads them, Go does not
        "\u0662\u0660\u0662\u0664-01-01T00:00:00Z",
        "",
    ],
)
def test_parse_rfc3339_refuses_what_go_would_not_read(text: str) -> None:
    with pytest.raises(ValueError, match=r"RFC 3339|years 1-9999|month|hour|out of range"):
        parse_rfc3339(text)


def test_format_rfc3339_round_trips_and_trims_zeros() -> None:
    when = datetime(2026, 11, 23, 11, 13, 27, 500000, UTC)
    assert format_rfc3339(when) == "2026-11-23T11:13:27.5Z"
    assert format_rfc3339(when.replace(microsecond=0)) == "2026-11-23T11:13:27Z"
    assert parse_rfc3339(format_rfc3339(when)) == when


def test_format_rfc3339_writes_what_strftime_wrote() -> None:
    # The formatting is isoformat's (cheaper); the text must be what strftime made.
    rng = random.Random(7)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    for _ in range(20_000):
        when = datetime.fromtimestamp(rng.uniform(0, 4e9), rng.choice(zones))
        when = when.replace(microsecond=rng.choice([0, 10, 500000, rng.randrange(10**6)]))
        old = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
        assert format_rfc3339(when) == old + "Z"
        assert parse_rfc3339(format_rfc3339(when)) == when


# -- LockInfo ---------------------------------------------------------------------------


TF_LOCK = (
    b'{"ID":"fdfc514d-1724-6c2d-4a38-3a50ffc2bcc1","Operation":"OperationTypeApply",'
    b'"Info":"","Who":"root@vm","Version":"1.15.0",'
    b'"Created":"2026-11-23T11:13:27.558548621Z","Path":""}'
)


def test_lockinfo_parse_as_terraform_sends_it() -> None:
    lock = LockInfo.parse(TF_LOCK)
    assert lock.id == "fdfc514d-1724-6c2d-4a38-3a50ffc2bcc1"
    assert lock.operation == "OperationTypeApply"
    assert lock.who == "root@vm"
    assert lock.version == "1.15.0"
    assert lock.created == datetime(2026, 11, 23, 11, 13, 27, 558548, UTC)
    assert lock.body == TF_LOCK  # verbatim, for the 423 echo
    assert not lock.is_zero_valued


def test_lockinfo_parse_matches_keys_case_insensitively_like_go() -> None:
    lock = LockInfo.parse(
        b'{"id":"abc","OPERATION":"plan","who":"bob@host","created":"2026-01-02T03:04:05Z",'
        b'"Unknown":"ignored"}'
    )
    assert lock.id == "abc"
    assert lock.operation == "plan"
    assert lock.who == "bob@host"
    assert lock.created == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_lockinfo_created_may_be_null_or_absent() -> None:
    assert LockInfo.parse(b'{"ID":"a","Created":null}').created is None
    assert LockInfo.parse(b'{"ID":"a"}').created is None


def test_opentofu_force_unlock_body_is_zero_valued() -> None:
    lock = LockInfo.parse(
        b'{"ID":"abc","Operation":"","Info":"","Who":"","Version":"",'
        b'"Created":"0001-01-01T00:00:00Z","Path":""}'
    )
    assert lock.is_zero_valued
    assert lock.id == "abc"


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b'"ID"', "JSON object"),
        (b"{}", "no ID"),
        (b'{"ID":""}', "no ID"),
        (b'{"ID":null}', "no ID"),
        (b'{"ID":1}', "'ID' must be a string"),
        (b'{"ID":"a","Who":["x"]}', "'Who' must be a string"),
        (b'{"ID":"a","Created":"2024-01-01T00:00:00.123456"}', "RFC 3339"),
        (b'{"ID":"a","Created":"not a time"}', "RFC 3339"),
        (b'{"ID":"a","Created":1700000000}', "RFC 3339"),
        (b'{"ID":"a","Created":"9999-12-31T23:59:59-01:00"}', "years 1-9999"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_lockinfo_parse_refuses_bad_bodies(body: bytes, what: str) -> None:
    with pytest.raises(InvalidLockInfo) as err:
        LockInfo.parse(body)
    assert what in err.value.message


def test_lockinfo_new_is_compact_in_terraforms_field_order() -> None:
    lock = LockInfo.new("state-push", "alice@laptop", lock_id="x-1")
    assert list(json.loads(lock.body)) == [
        "ID",
        "Operation",
        "Info",
        "Who",
        "Version",
        "Created",
        "Path",
    ]
    assert b" " not in lock.body
    assert LockInfo.parse(lock.body).created == lock.created


def test_lockinfo_describe_names_holder_and_time() -> None:
    text = LockInfo.parse(TF_LOCK).describe()
    assert "fdfc514d-1724-6c2d-4a38-3a50ffc2bcc1" in text
    assert "root@vm" in text
    assert "2026-11-23T11:13:27.558548Z" in text


# -- StateDoc ----------------------------------------------------------------------------


def test_statedoc_reads_serial_and_lineage_of_a_state() -> None:
    doc = StateDoc.parse(
        b'{"version":4,"terraform_version":"1.15.0","serial":3,"lineage":"L","outputs":{}}'
    )
    assert (doc.serial, doc.lineage, doc.format_version, doc.encrypted) == (3, "L", 4, False)
    assert doc.terraform_version == "1.15.0"


def test_statedoc_reads_an_opentofu_envelope() -> None:
    doc = StateDoc.parse(
        b'{"serial":2,"lineage":"L","meta":{"k":"dg=="},"encrypted_data":"eA==",'
        b'"encryption_version":"v0"}'
    )
    assert (doc.serial, doc.lineage, doc.format_version, doc.encrypted) == (2, "L", None, True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"  \n",
        b"nope",
        b"[]",
        b"{}",
        b'{"version":"4"}',
        b'{"version":true}',
        b'{"version":0}',
        b'{"version":5}',
        b'{"version":4,"serial":1.5}',
        b'{"version":4,"serial":true}',
        b'{"version":4,"lineage":7}',
        b'{"encryption_version":"v0","serial":1,"lineage":"x"}',
        b'{"encryption_version":"v0","encrypted_data":7}',
    ],
)
def test_statedoc_refuses_what_is_not_a_state(data: bytes) -> None:
    with pytest.raises(InvalidState):
        StateDoc.parse(data)


def test_statedoc_reads_null_serial_and_lineage_as_go_does() -> None:
    # Go leaves a field at its zero value for null; Terraform reads this state.
    doc = StateDoc.parse(b'{"version":4,"serial":null,"lineage":null}')
    assert (doc.serial, doc.lineage) == (0, "")


# -- StateVersion metadata ---------------------------------------------------------------


def test_version_metadata_round_trips_non_ascii() -> None:
    version = StateVersion(
        name="a",
        version_id="1",
        size=3,
        created=datetime(2026, 1, 1, tzinfo=UTC),
        serial=7,
        lineage="l\u00e9",
        actor="Zo\u00eb <zoe@example.com>",
        lock_id="id 1",
    )
    meta = version.to_metadata()
    assert all(value.isascii() for value in meta.values())
    fields = StateVersion.metadata_fields({k.upper(): v for k, v in meta.items()})
    assert fields == {
        "serial": 7,
        "lineage": "l\u00e9",
        "actor": "Zo\u00eb <zoe@example.com>",
        "lock_id": "id 1",
    }


def test_a_lock_info_body_parsed_again_is_the_same_value_and_bad_ones_fail_each_time() -> None:
    body = b'{"ID":"same","Who":"ci@runner","Operation":"OperationTypeApply"}'
    first = LockInfo.parse(body)
    assert LockInfo.parse(bytearray(body), limit=1024) == first
    assert LockInfo.parse(body).who == "ci@runner"
    for _ in range(2):
        with pytest.raises(InvalidLockInfo):
            LockInfo.parse(b'{"Who":"no id"}')
    with pytest.raises(PayloadTooLarge):
        LockInfo.parse(body, limit=10)
    large = b'{"ID":"big","Info":"' + b"x" * 5000 + b'"}'
    assert LockInfo.parse(large).info == "x" * 5000
