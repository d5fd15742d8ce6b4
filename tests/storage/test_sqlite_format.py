"""The data format stamped in the embedded store's file, and the refusal of a newer one."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from statekeeper.errors import ConfigError
from statekeeper.storage.sqlite.database import FORMAT, SqliteDatabase
from statekeeper.testing.processes import SRC, free_port


def _stamp(path: Path) -> int:
    with closing(sqlite3.connect(path)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def test_a_file_from_before_the_stamp_is_stamped_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "statekeeper.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE older (x)")
    SqliteDatabase(path).close()
    assert _stamp(path) == FORMAT


def test_a_file_of_a_newer_format_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "statekeeper.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE newer (x)")
        db.execute(f"PRAGMA user_version = {FORMAT + 1}")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match=rf"data format {FORMAT + 1}.*restore the backup"):
        SqliteDatabase(path)
    assert path.read_bytes() == before
    with closing(sqlite3.connect(path)) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["newer"]


def test_serve_on_a_newer_data_dir_exits_naming_the_file_and_what_to_do(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with closing(sqlite3.connect(data / "statekeeper.db")) as db:
        db.execute(f"PRAGMA user_version = {FORMAT + 1}")
    serve = ["serve", "--port", str(free_port()), "--data-dir", str(data)]
    done = subprocess.run(
        [sys.executable, "-m", "statekeeper", *serve],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"{data / 'statekeeper.db'} was written by a newer statekeeper" in done.stderr
    assert "Traceback" not in done.stderr
