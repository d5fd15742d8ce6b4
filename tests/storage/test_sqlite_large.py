"""The SQLite driver with large versions: uploads, 1 MB pieces, and reads by piece."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from statekeeper.errors import WriteRace
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.storage.sqlite.pieces import IN_MEMORY, PIECE
from statekeeper.storage.sqlite.store import SqliteStore

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


def _realistic_state(size: int) -> bytes:
    """A Terraform state of about ``size`` bytes: many instances, the same attribute names."""
    head = b'{"version": 4, "serial": 7, "lineage": "l", "outputs": {}, "resources": ['
    parts, n, total = [head], 0, len(head)
    while total < size:
        parts.append(
            b'%s{"mode": "managed", "type": "aws_instance", "name": "web%d", "provider": '
            b'"provider[\\"registry.terraform.io/hashicorp/aws\\"]", "instances": [{'
            b'"attributes": {"id": "i-%016x", "arn": "arn:aws:ec2:eu-west-1:123456789012:'
            b'instance/i-%016x", "tags": {"Name": "web-%d", "team": "platform"}}}]}'
            % (b", " if n else b"", n, n * 7919, n * 7919, n)
        )
        total += len(parts[-1])
        n += 1
    return b"".join(parts) + b"]}"


def _stored_bytes(path: Path, version_id: str) -> tuple[int, str | None]:
    with sqlite3.connect(path) as db:
        pieces: int = db.execute(
            "SELECT coalesce(sum(length(data)), 0) FROM object_pieces WHERE id = ?",
            (int(version_id),),
        ).fetchone()[0]
        marker: str | None = db.execute(
            "SELECT codec FROM objects WHERE id = ?", (int(version_id),)
        ).fetchone()[0]
    return pieces, marker


@pytest.mark.parametrize("size", [3 * MB, 12 * MB])  # read whole, and streamed by piece
def test_a_large_state_round_trips_verbatim_on_a_compressed_store_and_is_stored_smaller(
    store: SqliteStore, tmp_path: Path, size: int
) -> None:
    data = _realistic_state(size)
    with store.upload("big") as upload:
        for at in range(0, len(data), 64 * 1024):
            upload.write(data[at : at + 64 * 1024])
        info = upload.put({"k": "v"})
    assert info.size == len(data)
    stored, marker = _stored_bytes(tmp_path / "s.db", info.version_id)
    assert marker == "zstd" and 0 < stored < len(data) // 3
    obj = store.get("big")
    assert obj is not None and obj.data == data
    opened = store.open("big", info.version_id)
    assert opened is not None
    chunks = list(opened.chunks)
    assert b"".join(chunks) == data
    if size > IN_MEMORY:  # streamed: never more than a piece of decoded bytes at once
        assert len(chunks) > 1 and max(map(len, chunks)) <= PIECE
    # Written whole (a put of bytes) it is encoded the same way.
    again = store.put("big2", data, {})
    assert _stored_bytes(tmp_path / "s.db", again.version_id)[1] == "zstd"
    got = store.get("big2")
    assert got is not None and got.data == data


def test_a_plain_store_keeps_large_states_in_plain_pieces(tmp_path: Path) -> None:
    store = SqliteStore(SqliteDatabase(tmp_path / "s.db"), compression=None)
    data = _realistic_state(3 * MB)
    info = store.put("big", data, {})
    assert _stored_bytes(tmp_path / "s.db", info.version_id) == (len(data), None)
    assert _pieces(tmp_path / "s.db") == -(-len(data) // PIECE)
    # A compressed store reads what a plain one wrote, and the other way round.
    both = SqliteStore(SqliteDatabase(tmp_path / "s.db"))
    got = both.get("big")
    assert got is not None and got.data == data


def test_a_damaged_compressed_piece_is_reported_not_served(
    store: SqliteStore, tmp_path: Path
) -> None:
    from statekeeper.errors import StorageError

    data = _realistic_state(12 * MB)
    info = store.put("big", data, {})
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.execute(
            "UPDATE object_pieces SET data = substr(data, 1, length(data) / 2) "
            "WHERE id = ? AND seq = 0",
            (int(info.version_id),),
        )
    opened = store.open("big")
    assert opened is not None
    with pytest.raises(StorageError, match="compressed stored version"):
        b"".join(opened.chunks)
    with pytest.raises(StorageError, match="compressed stored version"):
        store.get("big")


def test_removing_versions_removes_their_pieces(store: SqliteStore, tmp_path: Path) -> None:
    first = store.put("k", _realistic_state(3 * MB), {})
    store.put("k", _realistic_state(2 * MB), {})
    store.delete_version("k", first.version_id)
    with sqlite3.connect(tmp_path / "s.db") as db:
        left = {r[0] for r in db.execute("SELECT DISTINCT id FROM object_pieces")}
    assert str(left.pop()) != first.version_id and not left
    store.delete("k")
    assert store.purge("k") == 1
    assert _pieces(tmp_path / "s.db") == 0


def _cuts(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in writes of ``sizes`` bytes, then the rest in one."""
    out, at = [], 0
    for size in sizes:
        out.append(data[at : at + size])
        at += size
    return [*out, data[at:]]


@pytest.mark.parametrize(
    "sizes",
    [[], [1000], [PIECE], [PIECE - 1, 2], [PIECE + 1], [3 * MB, 5, PIECE]],
    ids=["whole", "small-first", "a-piece", "across-a-piece", "past-a-piece", "uneven"],
)
def test_an_upload_compressed_as_it_arrives_is_stored_verbatim_whatever_its_writes(
    store: SqliteStore, tmp_path: Path, sizes: list[int]
) -> None:
    """The upload compresses from its first piece on; a write refused by the
    compare-and-swap and retried stores the same bytes."""
    first = store.put("k", b"1" * 10, {})
    data = _realistic_state(12 * MB)
    with store.upload("k") as upload:
        for part in _cuts(data, sizes):
            upload.write(part)
        with pytest.raises(WriteRace):
            upload.replace({}, None)
        info = upload.replace({}, first)
    stored, marker = _stored_bytes(tmp_path / "s.db", info.version_id)
    assert marker == "zstd" and 0 < stored < len(data) // 3
    with sqlite3.connect(tmp_path / "s.db") as db:
        lengths = [
            n
            for (n,) in db.execute(
                "SELECT length(data) FROM object_pieces WHERE id = ? ORDER BY seq",
                (int(info.version_id),),
            )
        ]
    assert all(n == PIECE for n in lengths[:-1]) and 0 < lengths[-1] <= PIECE
    got = store.get("k", info.version_id)
    assert got is not None and got.data == data
    opened = store.open("k", info.version_id)
    assert opened is not None and b"".join(opened.chunks) == data


def test_an_upload_that_does_not_shrink_is_stored_plain_after_compressible_bytes(
    store: SqliteStore, tmp_path: Path
) -> None:
    """Decided on the first piece: random bytes from the start are stored plain."""
    data = os.urandom(PIECE + 10) + _realistic_state(3 * MB)
    with store.upload("k") as upload:
        for part in _cuts(data, [500, PIECE]):
            upload.write(part)
        info = upload.put({})
    assert _stored_bytes(tmp_path / "s.db", info.version_id) == (len(data), None)
    got = store.get("k")
    assert got is not None and got.data == data
