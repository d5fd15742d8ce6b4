"""The driver contracts on S3 and DynamoDB (moto over HTTP), one driver instance per handle."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from statekeeper.storage.base import LockTable, ObjectStore
from statekeeper.storage.registry import open_locks, open_store
from statekeeper.testing.contracts import (
    HistoryEditsContract,
    LockTableContract,
    ObjectStoreContract,
)


class TestS3VersionedStore(ObjectStoreContract, HistoryEditsContract):
    @pytest.fixture
    def store(self, bucket: str) -> Iterator[ObjectStore]:
        store = open_store(f"s3://{bucket}/states")
        assert store.supports_versions
        yield store
        store.close()


class TestS3UnversionedStore(ObjectStoreContract):
    @pytest.fixture
    def store(self, plain_bucket: str) -> Iterator[ObjectStore]:
        store = open_store(f"s3://{plain_bucket}?sse=AES256")
        assert not store.supports_versions
        yield store
        store.close()


def _pair(store_url: str, locks_url: str) -> Iterator[tuple[LockTable, LockTable]]:
    stores = [open_store(store_url), open_store(store_url)]
    tables = [open_locks(locks_url, s) for s in stores]
    yield tables[0], tables[1]
    for t in tables:
        t.close()
    for s in stores:
        s.close()


class TestDynamoLocks(LockTableContract):
    @pytest.fixture
    def lock_tables(self, bucket: str, table: str) -> Iterator[tuple[LockTable, LockTable]]:
        yield from _pair(f"s3://{bucket}/p", f"dynamodb://{table}")


class TestS3LockFiles(LockTableContract):
    @pytest.fixture
    def lock_tables(self, bucket: str) -> Iterator[tuple[LockTable, LockTable]]:
        yield from _pair(f"s3://{bucket}/p", f"s3lock://{bucket}/p")


class TestS3LockFilesUnversioned(LockTableContract):
    @pytest.fixture
    def lock_tables(self, plain_bucket: str) -> Iterator[tuple[LockTable, LockTable]]:
        yield from _pair(f"s3://{plain_bucket}", "s3lock://")


class TestBothLocks(LockTableContract):
    @pytest.fixture
    def lock_tables(self, bucket: str, table: str) -> Iterator[tuple[LockTable, LockTable]]:
        # DynamoDB named first on purpose: the lock file must still be taken first.
        yield from _pair(f"s3://{bucket}", f"dynamodb://{table},s3lock://{bucket}")
