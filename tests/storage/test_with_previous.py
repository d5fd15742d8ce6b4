"""``ObjectStore.with_previous``: a version's bytes and the one before it, as the
``state.written`` webhook reads them (the contract suite runs the plain cases on
every driver; these are the embedded store's own: one transaction, pieces,
encryption)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.security.support import master_key

from statekeeper.app import Services
from statekeeper.errors import VersionNotFound
from statekeeper.settings import load_settings
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.storage.sqlite.pieces import PIECE
from statekeeper.storage.sqlite.store import SqliteStore


@pytest.fixture(params=["zstd", None])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(SqliteDatabase(tmp_path / "s.db"), compression=request.param)
    yield store
    store.close()


def _statements(store: SqliteStore) -> list[str]:
    """The SQL this thread's connection runs from now on."""
    seen: list[str] = []
    store.db._thread().conn.set_trace_callback(seen.append)
    return seen


def test_both_versions_are_read_in_one_transaction(store: SqliteStore) -> None:
    first = store.put("s", b'{"serial": 1}', {"a": "b"}).version_id
    second = store.put("s", b'{"serial": 2}', {"a": "b"}).version_id
    seen = _statements(store)
    got = store.with_previous("s", second)
    assert (got.data, got.previous, got.previous_data) == (
        b'{"serial": 2}',
        first,
        b'{"serial": 1}',
    )
    assert [s for s in seen if s.startswith(("BEGIN", "COMMIT"))] == ["BEGIN", "COMMIT"]
    seen.clear()
    got = store.with_previous("s", second, known=first)
    assert got.previous_data is None
    assert [s for s in seen if s.startswith(("BEGIN", "COMMIT"))] == ["BEGIN", "COMMIT"]


def test_versions_in_pieces_read_as_get_reads_them(store: SqliteStore) -> None:
    # Larger than a piece: kept in object_pieces (compressed: one zstd stream across them).
    big = [json.dumps({"serial": n, "pad": "x" * (PIECE + 1000) + str(n)}).encode() for n in (1, 2)]
    ids = [store.put("big", body, {}).version_id for body in big]
    got = store.with_previous("big", ids[1])
    assert (got.data, got.previous_data) == (big[1], big[0])
    assert got.data == store.get("big", ids[1]).data  # type: ignore[union-attr]


def test_a_version_or_the_one_before_gone_is_not_found(store: SqliteStore) -> None:
    ids = [store.put("s", b"%d" % n, {}).version_id for n in range(3)]
    store.delete_version("s", ids[1])
    got = store.with_previous("s", ids[2])
    assert (got.previous, got.previous_data) == (ids[0], b"0")
    with pytest.raises(VersionNotFound):
        store.with_previous("s", ids[1])
    with pytest.raises(VersionNotFound):
        store.with_previous("s", "x1")


def test_encrypted_versions_are_read_decrypted(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": tmp_path}, env={"STATEKEEPER_MASTER_KEY": master_key()})
    services = Services.build(settings)
    try:
        store = services.store
        bodies = [b'{"serial": %d, "secret": "hunter2"}' % n for n in (1, 2)]
        ids = [store.put("team/e", body, {}).version_id for body in bodies]
        got = store.with_previous("team/e", ids[1])
        assert (got.data, got.previous, got.previous_data) == (bodies[1], ids[0], bodies[0])
        sealed = store.inner.with_previous("team/e", ids[1])  # type: ignore[attr-defined]
        assert b"hunter2" not in sealed.data + (sealed.previous_data or b"")
    finally:
        services.close()


@pytest.mark.parametrize("version_id", ["²", "١٢", str(2**63), "-1", ""])
def test_a_version_id_that_names_no_row_is_not_found(store: SqliteStore, version_id: str) -> None:
    """Not a row ID (a non-ASCII digit, past SQLite's range): no such version, the same
    answer from every lookup that takes a version ID, never a failed query."""
    store.put("s", b'{"serial": 1}', {})
    for lookup in (store.version_before, store.with_previous, store.delete_version):
        with pytest.raises(VersionNotFound):
            lookup("s", version_id)
    with pytest.raises(VersionNotFound):
        store.get("s", version_id)
