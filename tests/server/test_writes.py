"""GET, POST/PUT and DELETE of state: the write rows of the design's rules table."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from tfwire import LINEAGE, NAME, Api, lock_body, md5_header, state_bytes

from statekeeper.security.caller import Caller
from statekeeper.terraform.names import StateName


def locked(api: Api) -> str:
    """Take the lock as Terraform does before a write; its ID."""
    body = lock_body()
    assert api.lock(body).status_code == 200
    lock_id: str = json.loads(body)["ID"]
    return lock_id


def test_get_of_a_missing_state_is_404(api: Api) -> None:
    response = api.get("no/such.tfstate")
    assert response.status_code == 404
    assert response.json()["error"] == "state_not_found"


def test_write_under_the_lock_and_read_back(api: Api) -> None:
    lock_id = locked(api)
    data = state_bytes(1)
    response = api.write(data, lock_id=lock_id)
    assert response.status_code == 200
    got = api.get()
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["content-md5"] == md5_header(data)


def test_every_accepted_write_is_an_immutable_version_with_its_facts(api: Api) -> None:
    lock_id = locked(api)
    first, second = state_bytes(1), state_bytes(2, outputs={"o": {"value": "x", "type": "string"}})
    assert api.write(first, lock_id=lock_id).status_code == 200
    assert api.write(second, lock_id=lock_id).status_code == 200

    newest, oldest = api.versions()
    for version, data, serial in ((oldest, first, 1), (newest, second, 2)):
        assert version.version_id
        assert version.serial == serial
        assert version.lineage == LINEAGE
        assert version.size == len(data)
        assert version.sha256 == hashlib.sha256(data).hexdigest()
        assert version.md5 == hashlib.md5(data).hexdigest()
        assert version.created is not None
        assert version.lock_id == lock_id
        assert version.actor == "anonymous"
    assert newest.is_current and not oldest.is_current
    assert newest.version_id != oldest.version_id
    # The old version still holds its own bytes.
    old = api.services.states.read_existing(StateName(NAME), Caller(), oldest.version_id)
    assert old.data == first


def test_put_works_like_post(api: Api) -> None:
    # update_method = "PUT"
    lock_id = locked(api)
    assert api.write(state_bytes(1), lock_id=lock_id, method="PUT").status_code == 200
    assert api.write(state_bytes(2), lock_id=lock_id, method="PUT").status_code == 200
    assert api.get().content == state_bytes(2)
    assert len(api.versions()) == 2
    assert api.write(state_bytes(1), lock_id=lock_id, method="PUT").status_code == 409


def test_write_without_a_lock_is_allowed(api: Api) -> None:
    # -lock=false sends no LOCK and no ?ID=; the serial guard still applies.
    assert api.write(state_bytes(1)).status_code == 200
    assert api.get().content == state_bytes(1)


@pytest.mark.parametrize("given", [None, "someone-else"])
def test_write_with_a_missing_or_wrong_id_while_locked_is_423(api: Api, given: str | None) -> None:
    lock_id = locked(api)
    assert api.write(state_bytes(1), lock_id=lock_id).status_code == 200

    response = api.write(state_bytes(2), lock_id=given)

    assert response.status_code == 423
    body = response.json()
    assert body["ID"] == lock_id  # the holder, as on a LOCK conflict
    assert body["error"] == "locked"
    assert "nothing was written" in body["message"]
    assert api.get().content == state_bytes(1)
    assert len(api.versions()) == 1


def test_write_with_an_id_when_not_locked_is_409(api: Api) -> None:
    response = api.write(state_bytes(1), lock_id="force-unlocked-meanwhile")
    assert response.status_code == 409
    assert response.json()["error"] == "lock_not_found"
    assert api.get().status_code == 404


def test_content_md5_mismatch_is_400_and_nothing_is_written(api: Api) -> None:
    assert api.write(state_bytes(1)).status_code == 200
    response = api.write(state_bytes(2), md5=md5_header(b"something else"))
    assert response.status_code == 400
    assert response.json()["error"] == "checksum_mismatch"
    assert "nothing was written" in response.json()["message"]
    assert api.get().content == state_bytes(1)
    assert len(api.versions()) == 1


@pytest.mark.parametrize("header", ["not base64!", base64.b64encode(b"short").decode()])
def test_content_md5_that_is_not_a_base64_md5_is_400(api: Api, header: str) -> None:
    response = api.write(state_bytes(1), md5=header)
    assert response.status_code == 400
    assert response.json()["error"] == "checksum_mismatch"
    assert "base64(md5(body))" in response.json()["message"]
    assert api.get().status_code == 404


@pytest.mark.parametrize(
    ("incoming", "wording"),
    [
        (
            state_bytes(6, lineage="other-lineage"),
            'cannot import state with lineage "other-lineage" over unrelated state with '
            f'lineage "{LINEAGE}"',
        ),
        (
            state_bytes(4),
            "cannot import state with serial 4 over newer state with serial 5",
        ),
        (
            state_bytes(5, outputs={"changed": {"value": 1, "type": "number"}}),
            "cannot overwrite existing state with serial 5 with a different state that has "
            "the same serial",
        ),
    ],
    ids=["other-lineage", "lower-serial", "same-serial-other-content"],
)
def test_serial_and_lineage_guard_is_409_with_terraforms_wording(
    api: Api, incoming: bytes, wording: str
) -> None:
    lock_id = locked(api)
    assert api.write(state_bytes(5), lock_id=lock_id).status_code == 200

    response = api.write(incoming, lock_id=lock_id)

    assert response.status_code == 409
    assert response.json()["error"] == "state_conflict"
    assert wording in response.json()["message"]
    assert api.get().content == state_bytes(5)
    assert len(api.versions()) == 1


def test_identical_repost_is_200_without_a_new_version(api: Api) -> None:
    lock_id = locked(api)
    data = state_bytes(3)
    first = api.write(data, lock_id=lock_id)
    again = api.write(data, lock_id=lock_id)
    assert first.status_code == again.status_code == 200
    assert first.json()["created"] is True
    assert again.json()["created"] is False
    assert again.json()["version_id"] == first.json()["version_id"]
    assert len(api.versions()) == 1


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"{not json", "could not be parsed as JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"serial": 1, "lineage": "x"}', "needs a 'version' number"),
        (b'{"version": 5, "serial": 1, "lineage": "x"}', "format version 5"),
        (b'{"version": 0, "serial": 1, "lineage": "x"}', "format version 0"),
        (b'{"version": 4, "serial": -1, "lineage": "x"}', "'serial'"),
        (b'{"version": 4, "serial": 1, "lineage": 7}', "'lineage'"),
        (b"", "empty"),
        (b"[" * 100_000 + b"]" * 100_000, "could not be parsed as JSON"),
        (b'{"version": 4, "lineage": "\xff"}', "not UTF-8"),
        # What Terraform's decoder refuses (it fails with "Error loading state").
        (b"\xef\xbb\xbf" + state_bytes(1), "byte-order mark"),
        (state_bytes(1).decode().encode("utf-16"), "UTF-8"),
        (state_bytes(1).decode().encode("utf-16-le"), "UTF-8"),
        (
            state_bytes(1, outputs={"n": {"value": 1, "type": "number"}}).replace(
                b"1,", b"NaN,", 1
            ),
            "NaN",
        ),
        (b'{"version": 4, "serial": Infinity, "lineage": "x"}', "Infinity"),
        (state_bytes(2**64), "18446744073709551615"),
        (state_bytes(10**30), "'serial'"),
        (state_bytes(1, Serial=10**30), "'serial'"),
        (state_bytes(1, terraform_version="latest"), "terraform_version"),
        (state_bytes(1, lineage="\ud800"), "surrogate"),
        (state_bytes(1, outputs=[]), "'outputs'"),
    ],
)
def test_bytes_that_are_not_a_state_are_400(api: Api, data: bytes, what: str) -> None:
    response = api.write(data)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_state"
    assert what in response.json()["message"]
    assert api.get().status_code == 404


def test_opentofu_encrypted_envelope_is_stored_opaque_and_served_byte_identical(
    api: Api,
) -> None:
    envelope = (
        b'{"serial":1,"lineage":"0d2b7f0a-1c3e-4f5a-9b8c-7d6e5f4a3b2c",'
        b'"meta":{"key_provider.pbkdf2.main":"eyJzYWx0IjoiQUFBQSJ9"},'
        b'"encrypted_data":"c2VjcmV0IHN0YXRlIGJ5dGVz","encryption_version":"v0"}'
    )
    lock_id = locked(api)
    assert api.write(envelope, lock_id=lock_id).status_code == 200
    assert api.get().content == envelope
    (version,) = api.versions()
    assert version.serial == 1
    assert version.lineage == "0d2b7f0a-1c3e-4f5a-9b8c-7d6e5f4a3b2c"
    # The next encrypted write is guarded like any other.
    newer = envelope.replace(b'"serial":1', b'"serial":2').replace(b"c2Vj", b"bW9y")
    assert api.write(newer, lock_id=lock_id).status_code == 200
    assert api.write(envelope, lock_id=lock_id).status_code == 409


def test_state_bytes_are_stored_and_served_verbatim(api: Api) -> None:
    # Go's encoder escapes <, > and & and keeps non-ASCII as UTF-8; odd spacing
    # and key order must survive too. Re-serializing would change all of it.
    data = (
        '{\n"version":   4,\t"serial": 1,\r\n  "lineage": "l\u00e9-\u2603",'
        '"terraform_version":"1.15.0",\n'
        '  "outputs": {"html": {"value": "\\u003cb\\u003e \\u0026 caf\u00e9 \U0001f600",'
        '"type": "string"}},\n"resources": [ ]  ,"check_results":null}\n\n'
    ).encode()
    assert api.write(data).status_code == 200
    assert api.get().content == data
    (version,) = api.versions()
    assert version.lineage == "l\u00e9-\u2603"


def test_delete_is_200_then_get_is_404(api: Api) -> None:
    assert api.write(state_bytes(1)).status_code == 200
    response = api.request("DELETE", api.url())
    assert response.status_code == 200
    assert api.get().status_code == 404
    # A new life for the name starts from any serial.
    assert api.write(state_bytes(1, lineage="new")).status_code == 200


def test_delete_of_a_missing_state_is_404(api: Api) -> None:
    assert api.request("DELETE", api.url()).status_code == 404


def test_delete_while_locked_by_another_is_423(api: Api) -> None:
    assert api.write(state_bytes(1)).status_code == 200
    locked(api)
    assert api.request("DELETE", api.url()).status_code == 423
    assert api.get().content == state_bytes(1)


def test_head_answers_like_get_without_a_body(api: Api) -> None:
    assert api.write(state_bytes(1)).status_code == 200
    response = api.request("HEAD", api.url())
    assert response.status_code == 200
    assert response.content == b""
    assert api.request("HEAD", api.url("missing")).status_code == 404
