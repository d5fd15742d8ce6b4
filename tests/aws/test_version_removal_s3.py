"""Two replicas removing one object version at once (moto): S3 answers a version's
DeleteObject alike whether the version was there or not, so each removal is claimed
first and exactly one of them removes it; the other is told it is gone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from statekeeper.errors import VersionNotFound
from statekeeper.storage.aws.s3 import S3Store
from statekeeper.storage.aws.s3history import CLAIMS_PREFIX
from statekeeper.storage.registry import open_store
from statekeeper.testing.statefiles import state_bytes
from statekeeper.times import format_rfc3339, utcnow

pytestmark = pytest.mark.aws

KEY = "team/app.tfstate"


def replica(bucket: str) -> S3Store:
    store = open_store(f"s3://{bucket}")
    assert isinstance(store, S3Store)
    return store


def three_versions(store: S3Store) -> list[str]:
    """The version IDs of serials 3, 2, 1 of KEY, newest first."""
    for serial in (1, 2, 3):
        store.put(KEY, state_bytes(serial), {})
    return [v.version_id for v in store.versions(KEY)]


def test_two_replicas_removing_one_version_at_once_remove_it_once(bucket: str, s3: Any) -> None:
    a, b = replica(bucket), replica(bucket)
    current, _, oldest = three_versions(a)
    removed: list[str] = []
    refused: list[str] = []

    def b_removes_it_first(params: dict[str, Any], **_: Any) -> None:
        # A has checked the version is there and is about to remove it: B, another
        # replica, removes the same version now.
        if params.get("Key") == KEY and not removed + refused:
            try:
                b.delete_version(KEY, oldest, current)
                removed.append("b")
            except VersionNotFound:
                refused.append("b")

    a.where.client.meta.events.register(
        "before-parameter-build.s3.DeleteObject", b_removes_it_first
    )
    try:
        a.delete_version(KEY, oldest, current)
        removed.append("a")
    except VersionNotFound:
        refused.append("a")
    # Without the claim both removals answered as if each had removed the version.
    assert (removed, refused) == (["a"], ["b"])
    assert [v.version_id for v in a.versions(KEY)] == [current, _]
    # The claim went with the removal: nothing of it stays in the bucket.
    listed = s3.list_object_versions(Bucket=bucket, Prefix=CLAIMS_PREFIX)
    assert not listed.get("Versions") and not listed.get("DeleteMarkers")
    # The version gone, a later removal is told so.
    with pytest.raises(VersionNotFound):
        b.delete_version(KEY, oldest, current)


def test_a_claim_left_by_a_replica_that_stopped_is_taken_over_once_its_time_is_out(
    bucket: str, s3: Any
) -> None:
    store = replica(bucket)
    current, middle, oldest = three_versions(store)
    for version, expires in ((oldest, -timedelta(seconds=1)), (middle, timedelta(minutes=5))):
        s3.put_object(
            Bucket=bucket,
            Key=f"{CLAIMS_PREFIX}{KEY}@{version}",
            Body=format_rfc3339(utcnow() + expires).encode(),
        )
    store.delete_version(KEY, oldest, current)  # its claim's time was out
    with pytest.raises(VersionNotFound, match="being removed by another process"):
        store.delete_version(KEY, middle, current)  # still held
    assert [v.version_id for v in store.versions(KEY)] == [current, middle]
