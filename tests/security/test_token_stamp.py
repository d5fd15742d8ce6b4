"""The SQLite token store's copy in memory: read once while unchanged, and never stale.

Every request is authenticated on the event loop; the store answers from a copy of
the ``tokens`` table while the stamp file beside the database (``TokenStamp``) says
no process changed it. These tests change the table from other processes, and kill
one between its commit and its stamp.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.security.support import basic, make_tokens, state_json

from statekeeper.errors import StorageError
from statekeeper.security.tokens import TokenRecord, hash_secret
from statekeeper.security.tokenstores import SqliteTokenStore, TokenStamp
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.testing.processes import SRC, StatekeeperServer
from statekeeper.times import utcnow


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "statekeeper.db")
    yield database
    database.close()


def _reads(db: SqliteDatabase) -> list[str]:
    """The reads of the tokens table on this thread's connection from now on."""
    seen: list[str] = []
    db._connection().set_trace_callback(
        lambda sql: seen.append(sql) if "FROM tokens" in sql else None
    )
    return seen


def _record(name: str, secret: str = "s3cret") -> TokenRecord:
    return TokenRecord(name, hash_secret(secret), ("team/*:read",), utcnow(), None)


def _elsewhere(db_path: Path, code: str, exit_code: int = 0) -> None:
    """Run ``code`` in another Python process, with ``store`` on the same database."""
    prelude = textwrap.dedent(
        f"""
        from pathlib import Path
        from statekeeper.security.tokens import TokenRecord, hash_secret
        from statekeeper.security.tokenstores import SqliteTokenStore
        from statekeeper.storage.sqlite.database import SqliteDatabase
        from statekeeper.times import utcnow
        store = SqliteTokenStore(SqliteDatabase(Path({str(db_path)!r})))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == exit_code, done.stderr


def test_the_table_is_read_once_while_no_process_changes_it(db: SqliteDatabase) -> None:
    store = SqliteTokenStore(db)
    store.add(_record("ci"))
    reads = _reads(db)
    for _ in range(20):
        assert not store.empty()
        assert store.get("ci") is not None
        assert store.get("nobody") is None
        assert store.find(hash_secret("s3cret")) is not None
    assert len(reads) == 1


def test_a_change_in_this_process_is_seen_at_once(db: SqliteDatabase) -> None:
    store = SqliteTokenStore(db)
    assert store.empty()
    store.add(_record("ci"))
    assert not store.empty()
    assert store.get("ci") is not None
    store.revoke("ci")
    assert store.get("ci") is None
    assert store.find(hash_secret("s3cret")) is None
    assert store.empty()


def test_tokens_created_and_revoked_by_another_process_are_seen_at_once(
    db: SqliteDatabase,
) -> None:
    store = SqliteTokenStore(db)
    assert store.empty()
    _elsewhere(db.path, 'store.add(TokenRecord("ci", hash_secret("x"), (), utcnow(), None))')
    assert not store.empty()
    assert store.get("ci") is not None
    _elsewhere(db.path, 'store.revoke("ci")')
    assert store.get("ci") is None
    assert store.empty()


def test_a_writer_killed_between_its_commit_and_its_stamp_leaves_no_stale_copy(
    db: SqliteDatabase,
) -> None:
    store = SqliteTokenStore(db)
    store.add(_record("ci"))
    assert store.get("ci") is not None  # the copy is kept
    # What a writer leaves when killed after its commit: the pending stamp it wrote
    # before the commit, and the committed change (here a revocation).
    _elsewhere(
        db.path,
        """
        import os, sqlite3
        stamp = Path(str(store.db.path) + "-tokens")
        fd = os.open(stamp, os.O_WRONLY)
        os.pwrite(fd, bytes(16), 0)
        with sqlite3.connect(store.db.path) as conn:
            conn.execute("DELETE FROM tokens WHERE name = 'ci'")
        os._exit(9)
        """,
        exit_code=9,
    )
    assert store.get("ci") is None
    # The stamp stays pending: each answer reads the table (and nothing is kept)...
    reads = _reads(db)
    with sqlite3.connect(db.path) as conn:
        conn.execute("INSERT INTO tokens VALUES ('late', 'ab', '[]', '2026-01-01T00:00:00Z', NULL)")
    assert store.get("late") is not None
    assert store.get("late") is not None
    assert len(reads) == 2
    # ...until the next change through a store writes a stamp again.
    store.add(_record("next", "other"))
    reads.clear()
    assert store.get("next") is not None
    assert store.get("next") is not None
    assert len(reads) == 1


def test_without_a_stamp_the_table_is_read_each_time_and_a_change_is_refused(
    tmp_path: Path,
) -> None:
    db = SqliteDatabase(tmp_path / "statekeeper.db")
    try:
        SqliteTokenStore(db).add(_record("ci"))
        (tmp_path / "statekeeper.db-tokens").unlink()
        (tmp_path / "statekeeper.db-tokens").mkdir()  # no stamp can be opened there
        store = SqliteTokenStore(db)
        reads = _reads(db)
        assert store.get("ci") is not None
        assert store.get("ci") is not None
        assert len(reads) == 2
        # A change other processes would not see is not made.
        with pytest.raises(StorageError, match=r"statekeeper\.db-tokens"):
            store.add(_record("other", "x"))
        with pytest.raises(StorageError, match=r"statekeeper\.db-tokens"):
            store.revoke("ci")
        assert [r.name for r in store.all()] == ["ci"]
    finally:
        db.close()


def test_a_new_stamp_is_as_accessible_as_its_database(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "statekeeper.db")
    try:
        os.chmod(db.path, 0o660)
        SqliteTokenStore(db)
        assert (tmp_path / "statekeeper.db-tokens").stat().st_mode & 0o777 == 0o660
    finally:
        db.close()


def test_a_token_revoked_by_the_cli_is_refused_by_a_running_server_at_once(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    secrets = make_tokens(tmp_path / "server", {"ci": ["team/*:write"]})
    server = serve(workdir=tmp_path / "server")
    url = server.state_url("team/a.tfstate")
    headers = basic("ci", secrets["ci"])
    assert httpx.post(url, content=state_json(1), headers=headers).status_code == 200
    assert httpx.get(url, headers=headers).status_code == 200
    revoked = subprocess.run(
        [sys.executable, "-m", "statekeeper", "token", "revoke", "ci"],
        cwd=tmp_path / "server",
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoked.returncode == 0, revoked.stderr
    r = httpx.get(url, headers=headers)
    assert r.status_code == 401


def test_a_stamp_deleted_under_a_running_store_does_not_hide_a_revocation(
    db: SqliteDatabase,
) -> None:
    store = SqliteTokenStore(db)
    store.add(_record("ci"))
    assert store.get("ci") is not None  # the copy is kept, under the first file's stamp
    stamp = Path(f"{db.path}-tokens")
    stamp.unlink()
    # Another process revokes the token: it makes a new stamp file, which the store's
    # mapping of the deleted one cannot see.
    _elsewhere(db.path, 'store.revoke("ci")')
    assert stamp.exists()
    store._stamp._checked -= TokenStamp.RECHECK  # type: ignore[union-attr]  # a second on
    assert store.get("ci") is None
    # The store follows the new file: cached again, and its next change seen.
    reads = _reads(db)
    assert store.get("ci") is None
    assert store.get("ci") is None
    assert len(reads) == 1
    _elsewhere(db.path, 'store.add(TokenRecord("ci", hash_secret("y"), (), utcnow(), None))')
    assert store.get("ci") is not None
