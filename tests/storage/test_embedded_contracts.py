"""The driver contracts on the embedded drivers: memory and SQLite on disk."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from statekeeper.storage.base import LockTable, ObjectStore
from statekeeper.storage.memory import MemoryLocks, MemoryStore
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.storage.sqlite.locks import SqliteLocks
from statekeeper.storage.sqlite.store import SqliteStore
from statekeeper.testing.contracts import (
    HistoryEditsContract,
    LockTableContract,
    ObjectStoreContract,
)


class TestMemoryStore(ObjectStoreContract):
    @pytest.fixture
    def store(self) -> ObjectStore:
        return MemoryStore(uuid.uuid4().hex)


class TestMemoryLocks(LockTableContract):
    @pytest.fixture
    def lock_tables(self) -> tuple[LockTable, LockTable]:
        name = uuid.uuid4().hex
        return MemoryLocks(name), MemoryLocks(name)


class TestSqliteStore(ObjectStoreContract, HistoryEditsContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ObjectStore]:
        store = SqliteStore(SqliteDatabase(tmp_path / "s.db"))
        yield store
        store.close()


class TestSqlitePlainStore(ObjectStoreContract, HistoryEditsContract):
    """Compression off: the same contract on plain rows."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ObjectStore]:
        store = SqliteStore(SqliteDatabase(tmp_path / "s.db"), compression=None)
        yield store
        store.close()


class TestSqliteLocks(LockTableContract):
    @pytest.fixture
    def lock_tables(self, tmp_path: Path) -> Iterator[tuple[LockTable, LockTable]]:
        # Two databases handles on one file, like two server processes.
        a = SqliteLocks(SqliteDatabase(tmp_path / "l.db"))
        b = SqliteLocks(SqliteDatabase(tmp_path / "l.db"))
        yield a, b
        a.close()
        b.close()
