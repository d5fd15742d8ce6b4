"""A state purged from the trash on S3 (moto) stays deleted while its versions go."""

from __future__ import annotations

from typing import Any

import pytest

from statekeeper.storage.aws.s3 import S3Store
from statekeeper.storage.registry import open_store
from statekeeper.testing.statefiles import state_bytes

pytestmark = pytest.mark.aws

KEY = "team/app.tfstate"


def test_a_state_being_purged_is_never_current_again(bucket: str, s3: Any) -> None:
    store = open_store(f"s3://{bucket}").records.objects
    assert isinstance(store, S3Store)
    for serial in (1, 2):
        store.put(KEY, state_bytes(serial), {})
    store.delete(KEY)
    seen: list[bool] = []

    def between_removals(**_: Any) -> None:
        # What Terraform's GET (or another replica's write check) finds meanwhile.
        seen.append(store.get(KEY) is not None)

    store.where.client.meta.events.register("after-call.s3.DeleteObject", between_removals)
    assert store.purge(KEY) == 2
    # After each removal by ID: the two versions, then the delete marker.
    assert seen == [False, False, False], "the purged state was current again meanwhile"
    assert s3.list_object_versions(Bucket=bucket, Prefix=KEY).get("Versions", []) == []
    assert s3.list_object_versions(Bucket=bucket, Prefix=KEY).get("DeleteMarkers", []) == []
