"""The SQLite driver with large versions: uploads, 1 MB pieces, and reads by piece."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from statekeeper.errors import WriteRace
from statekeeper.storage.sqlite import PIECE, SqliteDatabase, SqliteStore

MB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(SqliteDatabase(tmp_path / "s.db"))


def _pieces(path: Path) -> int:
    with sqlite3.connect(path) as db:
        count: int = db.execute("SELECT count(*) FROM object_pieces").fetchone()[0]
    return count


def test_a_small_upload_is_one_row_and_a_large_one_is_pieces(
    store: SqliteStore, tmp_path: Path
) -> None:
    small, large = os.urandom(1000), os.urandom(10 * MB + 7)
    for key, data in (("small", small), ("large", large)):
        with store.upload(key) as upload:
            for at in range(0, len(data), 64 * 1024):
                upload.write(data[at : at + 64 * 1024])
            info = upload.replace({"k": "v"}, None)
        assert info.size == len(data)
    assert _pieces(tmp_path / "s.db") == -(-len(large) // PIECE)
    for key, data in (("small", small), ("large", large)):
        obj = store.get(key)
        assert obj is not None and obj.data == data and obj.info.metadata == {"k": "v"}
        opened = store.open(key)
        assert opened is not None and b"".join(opened.chunks) == data
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".upload-")] == []


def test_an_upload_refused_by_compare_and_swap_can_be_retried(store: SqliteStore) -> None:
    first = store.put("k", b"1" * 10, {})
    data = os.urandom(9 * MB)
    with store.upload("k") as upload:
        upload.write(data)
        with pytest.raises(WriteRace):
            upload.replace({}, None)
        info = upload.replace({}, first)
    got = store.get("k", info.version_id)
    assert got is not None and got.data == data
    assert [v.version_id for v in store.versions("k")] == [info.version_id, first.version_id]


def test_an_aborted_upload_stores_nothing(store: SqliteStore, tmp_path: Path) -> None:
    with store.upload("k") as upload:
        upload.write(os.urandom(9 * MB))
    assert store.head("k") is None
    assert _pieces(tmp_path / "s.db") == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".upload-")] == []
