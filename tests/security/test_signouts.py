"""The record of signed-out UI sessions, in both places it is kept: a table of the
embedded database, and objects beside the states in a store without one."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statekeeper.security.signouts import SignedOut, open_signouts, session_id
from statekeeper.storage.base import ObjectStore, RecordSpace
from statekeeper.storage.memory import MemoryStore
from statekeeper.storage.registry import open_store
from statekeeper.terraform.layout import SIGNOUTS_PREFIX
from statekeeper.testing.processes import MotoServer

LIFETIME = 0.5


@pytest.fixture(params=["sqlite", "objects"])
def kept(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SignedOut, ObjectStore]]:
    store: ObjectStore
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'statekeeper.db'}")
        records = store.records
        assert records.database is not None
    else:
        store = MemoryStore(f"signouts-{time.monotonic_ns()}")
        records = RecordSpace(store)
    yield open_signouts(records, LIFETIME), store
    store.close()


def test_an_ended_session_is_known_until_its_cookie_expires(
    kept: tuple[SignedOut, ObjectStore],
) -> None:
    signouts, _ = kept
    ended, other = session_id("csrf-of-a"), session_id("csrf-of-b")
    assert ended != "csrf-of-a"  # the CSRF token itself is not kept
    assert not signouts.ended(ended)
    signouts.end(ended, time.time() + 60)
    assert signouts.ended(ended)
    assert not signouts.ended(other)
    signouts.end(other, time.time() - 1)  # its cookie has expired already
    assert not signouts.ended(other)


def test_entries_past_their_cookies_lifetime_are_dropped(
    kept: tuple[SignedOut, ObjectStore],
) -> None:
    signouts, store = kept
    signouts.end(session_id("old"), time.time() + LIFETIME)
    time.sleep(LIFETIME + 0.2)
    signouts.end(session_id("new"), time.time() + LIFETIME)
    database = store.records.database
    if database is not None:
        rows = database.run(lambda c: c.execute("SELECT session FROM ui_signouts").fetchall())
        assert [r[0] for r in rows] == [session_id("new")]
    else:
        keys = [info.key for info in store.scan(SIGNOUTS_PREFIX)]
        assert keys == [SIGNOUTS_PREFIX + session_id("new")]


def test_on_a_versioned_bucket_a_dropped_entry_leaves_no_version_behind(moto: MotoServer) -> None:
    # Terraform wants its bucket versioned: a plain delete there only adds a delete marker
    # above the entry's versions, and the bucket would keep every sign-out for ever.
    bucket = moto.versioned_bucket("signouts")
    s3 = moto.client("s3")
    store = open_store(f"s3://{bucket}")
    # S3 times objects to the second: a lifetime that one second cannot blur.
    signouts = open_signouts(store.records, 2.0)
    old = SIGNOUTS_PREFIX + session_id("old")
    signouts.end(session_id("old"), time.time() + 2)
    signouts.end(session_id("old"), time.time() + 2)  # signed out from two tabs
    listed = s3.list_object_versions(Bucket=bucket, Prefix=SIGNOUTS_PREFIX)
    assert [v["Key"] for v in listed["Versions"]] == [old, old]
    time.sleep(3.2)
    signouts.end(session_id("new"), time.time() + 2)
    listed = s3.list_object_versions(Bucket=bucket, Prefix=SIGNOUTS_PREFIX)
    assert [v["Key"] for v in listed["Versions"]] == [SIGNOUTS_PREFIX + session_id("new")]
    assert "DeleteMarkers" not in listed
    store.close()


def test_a_sign_out_stands_when_the_expired_entries_may_not_be_removed(
    moto: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Credentials from an IAM policy older than its ExpireSignOuts statement: the new
    # sign-out is recorded, the tidying is said to have failed, and nothing is raised.
    bucket = moto.versioned_bucket("signouts-denied")
    s3 = moto.client("s3")
    denied = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
                "Resource": f"arn:aws:s3:::{bucket}/{SIGNOUTS_PREFIX}*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(denied))
    store = open_store(f"s3://{bucket}")
    signouts = open_signouts(store.records, 2.0)
    signouts.end(session_id("old"), time.time() + 2)
    time.sleep(3.2)
    with caplog.at_level(logging.WARNING, logger="statekeeper.signouts"):
        signouts.end(session_id("new"), time.time() + 2)
    assert signouts.ended(session_id("new"))
    (warning,) = caplog.records
    assert "expired sign-outs stay" in warning.getMessage()
    assert "ExpireSignOuts" in warning.getMessage()
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=SIGNOUTS_PREFIX)
    assert len(listed["Contents"]) == 2
    store.close()
