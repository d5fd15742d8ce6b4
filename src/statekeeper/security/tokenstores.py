"""Where API tokens are kept: two stores of :class:`~statekeeper.security.tokens.TokenRecord`.

- :class:`SqliteTokenStore`, a ``tokens`` table in the embedded database, kept in
  memory while a stamp file beside the database says it is unchanged (see
  :class:`TokenStamp`): every request is authenticated, and a read of the table on
  the event loop for each one cost more than the rest of the check;
- :class:`FileTokenStore`, a TOML file the operator provides (``tokens_file``),
  for stateless replicas on S3. It is re-read when it changes, so replicas
  pick up a new or revoked token without a restart::

      [tokens.ci-deploy]
      sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
      scopes = ["team/app/*:write", "shared/**:outputs"]
      created = "2026-01-01T00:00:00Z"
      expires = "2026-04-01T00:00:00Z"     # optional
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import logging
import mmap
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from statekeeper.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    NotFound,
    StorageError,
    Unauthenticated,
)
from statekeeper.security.grants import parse_grants
from statekeeper.security.tokens import TokenRecord, validate_token_name
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.times import format_rfc3339, parse_rfc3339

__all__ = ["FileTokenStore", "SqliteTokenStore", "TokenStamp"]

log = logging.getLogger("statekeeper.tokens")


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tokens (
        name TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        created TEXT NOT NULL,
        expires TEXT
    )""",
)


_COLUMNS = "name, sha256, scopes, created, expires"

#: The stamp while a change is under way (or was cut short by a crash): not kept.
_PENDING = bytes(16)


class TokenStamp:
    """Sixteen bytes in a file beside the database, rewritten around every change of
    its ``tokens`` table, by whichever process makes it: a reader that finds the
    bytes it saw when it last read the table knows the table is the same, in about
    a tenth of a microsecond (the file is mapped into memory: no system call).

    A change, under an exclusive ``flock`` of the file (changes one at a time),
    first writes :data:`_PENDING`, then commits, then writes fresh random bytes. A
    reader takes the stamp *before* it reads the table and keeps what it read only
    under a stamp that is not pending. So whatever it kept was read after the stamp
    it is kept under was written, and any commit after that read happened after a
    pending stamp was written and is followed by new bytes: the next check sees a
    different stamp and reads the table again. A writer killed between its commit
    and its last write leaves the stamp pending: readers then read the table every
    time (correct, only slower) until the next change writes a stamp again.
    """

    SIZE = 16
    #: Seconds between checks that the stamp's path still names the file mapped.
    RECHECK = 1.0

    def __init__(self, path: Path, database: Path) -> None:
        self.path = path
        # Open for the store's life; not O_APPEND, under which pwrite ignores its offset.
        self._file = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+b")
        opened = os.fstat(self._file.fileno())
        self._identity = (opened.st_dev, opened.st_ino)
        self._checked = time.monotonic()
        #: The path names another file, or none: this one's bytes no longer count.
        self.moved = False
        with self._exclusive():
            if os.fstat(self._file.fileno()).st_size < self.SIZE:
                # New: whoever may change the database's tokens may change its stamp.
                with contextlib.suppress(PermissionError):
                    os.fchmod(self._file.fileno(), os.stat(database).st_mode & 0o666)
                os.pwrite(self._file.fileno(), _fresh(), 0)
        self._view = mmap.mmap(self._file.fileno(), self.SIZE, prot=mmap.PROT_READ)

    def read(self) -> bytes:
        """The stamp; :data:`_PENDING` once the path names another file (or none)."""
        now = time.monotonic()
        if now - self._checked >= self.RECHECK:
            # A stamp file deleted or replaced under a running server would leave it
            # watching bytes no writer touches any more: checked every RECHECK seconds
            # (a stat per request would cost about what the stamp saves).
            self._checked = now
            try:
                found = os.stat(self.path)
            except OSError:
                self.moved = True
            else:
                self.moved = self.moved or (found.st_dev, found.st_ino) != self._identity
        return _PENDING if self.moved else self._view[: self.SIZE]

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Around a change of the table (its commit inside the block)."""
        with self._exclusive():
            os.pwrite(self._file.fileno(), _PENDING, 0)
            try:
                yield
            finally:
                # Also after a failed change: new bytes only make readers read again.
                os.pwrite(self._file.fileno(), _fresh(), 0)


def _fresh() -> bytes:
    stamp = _PENDING
    while stamp == _PENDING:
        stamp = os.urandom(TokenStamp.SIZE)
    return stamp


@dataclass(frozen=True)
class _Table:
    """The whole ``tokens`` table as read under ``stamp``."""

    stamp: bytes
    by_name: dict[str, TokenRecord]
    by_sha256: dict[str, TokenRecord]


class SqliteTokenStore:
    """The ``tokens`` table of the embedded database.

    Answers come from a copy of the table in memory while :class:`TokenStamp` says
    no process changed it since the copy was read (a token created or revoked by the
    CLI is seen by the server's next request). Without a stamp file it can open (a
    directory it cannot create one in) every answer reads the table, and a change
    is refused: other processes would keep their copies.
    """

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

        def create(conn: sqlite3.Connection) -> None:
            for statement in _SCHEMA:
                conn.execute(statement)

        db.run(create, write=True)
        self._stamp = self._open_stamp()
        self._kept: _Table | None = None

    def _open_stamp(self) -> TokenStamp | None:
        try:
            return TokenStamp(Path(f"{self.db.path}-tokens"), self.db.path)
        except (OSError, ValueError):  # ValueError: mmap of a file too short to map
            return None

    @staticmethod
    def _record(row: tuple[str, str, str, str, str | None]) -> TokenRecord:
        name, sha256, scopes, created, expires = row
        return TokenRecord(
            name=name,
            sha256=sha256,
            scopes=tuple(json.loads(scopes)),
            created=parse_rfc3339(created),
            expires=parse_rfc3339(expires) if expires else None,
        )

    def _table(self) -> _Table:
        """The table: the kept copy if the stamp is the one it was read under."""
        stamp = self._stamp.read() if self._stamp is not None else _PENDING
        if self._stamp is not None and self._stamp.moved:
            # The stamp's file was deleted or replaced: this read is not kept (the
            # stamp read as _PENDING), and the next one follows the path's new file.
            self._stamp = self._open_stamp()
        kept = self._kept
        if kept is not None and kept.stamp == stamp:
            return kept
        rows = self.db.run(lambda db: db.execute(f"SELECT {_COLUMNS} FROM tokens").fetchall())
        records = [self._record(row) for row in rows]
        table = _Table(stamp, {r.name: r for r in records}, {r.sha256: r for r in records})
        if stamp != _PENDING:
            self._kept = table
        return table

    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Around a change: stamped, or refused (running servers would not see it)."""
        if self._stamp is None or self._stamp.moved:
            self._stamp = self._open_stamp()
        if self._stamp is None:
            raise StorageError(
                f"cannot open {self.db.path}-tokens, the stamp that tells running servers "
                "the tokens changed, so the change was not made; give this user the same "
                "access to it as to the database"
            )
        with self._stamp.changing():
            yield

    def add(self, record: TokenRecord) -> None:
        def tx(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM tokens WHERE name = ?", (record.name,)).fetchone():
                raise Conflict(
                    f"a token named {record.name!r} exists; revoke it first or pick another name"
                )
            db.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?, ?)",
                (
                    record.name,
                    record.sha256,
                    json.dumps(list(record.scopes)),
                    format_rfc3339(record.created),
                    format_rfc3339(record.expires) if record.expires else None,
                ),
            )

        with self._changing():
            self.db.run(tx, write=True)

    def get(self, name: str) -> TokenRecord | None:
        return self._table().by_name.get(name)

    def find(self, sha256: str) -> TokenRecord | None:
        return self._table().by_sha256.get(sha256)

    def all(self) -> list[TokenRecord]:
        return sorted(self._table().by_name.values(), key=lambda r: r.name)

    def empty(self) -> bool:
        return not self._table().by_name

    def revoke(self, name: str) -> TokenRecord:
        def tx(db: sqlite3.Connection) -> TokenRecord:
            row = db.execute(f"SELECT {_COLUMNS} FROM tokens WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"there is no token named {name!r}; see 'statekeeper token list'")
            db.execute("DELETE FROM tokens WHERE name = ?", (name,))
            return self._record(row)

        with self._changing():
            return self.db.run(tx, write=True)


#: The keys of a ``[tokens.NAME]`` table (what :meth:`TokenRecord.to_toml` writes).
_TOKEN_KEYS = ("sha256", "scopes", "created", "expires")
#: The stamp of a tokens file that is not there.
_MISSING = (-1, -1)


class FileTokenStore:
    """Tokens in an operator-provided TOML file, re-read whenever it changes (a pipe,
    ``<(vault read …)``, which holds them for one read, only once).

    The first read is strict: a fault (bad TOML, a missing or unknown key, a bad
    hash or grant, no file) is a :class:`ConfigError` naming the file, the token
    and the key, so that ``serve`` (which calls :meth:`check` before it listens)
    and every command refuse to start. Once read whole, a later bad edit is a
    running server's to survive: it logs the fault once and refuses every token
    (Unauthenticated, naming the file, not the caller's token) until the file is
    corrected, not with the last good tokens, which could keep alive a token the
    edit revoked; a change written to it is still refused.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._guard = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._tokens: dict[str, TokenRecord] = {}
        self._fault: ConfigError | None = None
        self._loaded = False

    def check(self) -> int:
        """Read and validate the file now; how many tokens it holds."""
        return len(self._load())

    def _load(self, *, writing: bool = False) -> dict[str, TokenRecord]:
        with self._guard:
            read_once = False
            try:
                st = self.path.stat()
            except FileNotFoundError:
                if writing:
                    return {}  # 'token create' makes the file
                stamp = _MISSING
            except OSError as exc:
                raise StorageError(f"cannot read the tokens file {self.path}: {exc}") from exc
            else:
                stamp = (st.st_mtime_ns, st.st_size)
                # A pipe (--tokens-file <(vault read …)) holds the tokens for one read,
                # and the write into it changed its mtime: it is read once.
                read_once = self._loaded and not stat.S_ISREG(st.st_mode)
            if stamp != self._stamp and not read_once:
                self._stamp = stamp
                try:
                    self._tokens, self._fault = self._parse(), None
                    self._loaded = True
                except ConfigError as exc:
                    self._tokens, self._fault = {}, exc
                    if self._loaded:
                        log.error(
                            "every API token is refused until the tokens file is corrected: %s",
                            exc.message,
                        )
            if self._fault is not None:
                if writing or not self._loaded:
                    raise self._fault
                # The caller's credentials are not at fault, and are not what to change;
                # what the file holds stays in the log, which the operator reads.
                raise Unauthenticated(
                    f"this server's tokens file {self.path} cannot be read or parsed, so no "
                    "API token can be checked; the server's operator must correct the file "
                    "(the server's log says what is wrong with it)"
                )
            return self._tokens

    def _parse(self) -> dict[str, TokenRecord]:
        import tomllib  # here: only a tokens file needs it

        try:
            raw = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(
                f"the tokens file {self.path} does not exist; correct tokens_file, or make "
                f"the file with 'statekeeper token create NAME --scope … --tokens-file "
                f"{self.path}'"
            ) from exc
        except OSError as exc:
            raise ConfigError(f"cannot read the tokens file {self.path}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"the tokens file {self.path} is not UTF-8 text") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the tokens file {self.path} is not valid TOML: {exc}") from exc
        unknown = sorted(set(raw) - {"tokens"})
        if unknown:
            raise ConfigError(
                f"{self.path}: unknown key(s) {', '.join(unknown)}; the tokens file holds "
                "[tokens.NAME] tables only"
            )
        tokens = raw.get("tokens", {})
        if not isinstance(tokens, dict):
            raise ConfigError(f"{self.path}: 'tokens' must be a table of [tokens.NAME] tables")
        return {name: self._record(name, entry) for name, entry in tokens.items()}

    def _record(self, name: str, entry: object) -> TokenRecord:
        where = f"{self.path}: [tokens.{name}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table (sha256, scopes, created, expires)")
        unknown = sorted(set(entry) - set(_TOKEN_KEYS))
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(_TOKEN_KEYS)}"
            )
        for key in ("sha256", "scopes"):
            if key not in entry:
                raise ConfigError(f"{where}: {key} is required")
        try:
            validate_token_name(name)
        except BadRequest as exc:
            raise ConfigError(f"{where}: {exc.message}") from exc
        sha256 = entry["sha256"]
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ConfigError(f"{where}: sha256 must be 64 lowercase hex digits")
        scopes = entry["scopes"]
        if (
            not isinstance(scopes, list)
            or not scopes
            or not all(isinstance(g, str) for g in scopes)
        ):
            raise ConfigError(f'{where}: scopes must be a list of grants, e.g. ["team/*:write"]')
        try:
            grants = tuple(str(g) for g in parse_grants(scopes))
        except BadRequest as exc:
            raise ConfigError(f"{where}: scopes: {exc.message}") from exc
        times: dict[str, datetime] = {}
        for key in ("created", "expires"):
            value = entry.get(key)
            if isinstance(value, datetime) and value.tzinfo is not None:
                times[key] = value  # a TOML date-time, unquoted
            elif value is not None:
                try:
                    times[key] = parse_rfc3339(str(value))
                except ValueError as exc:
                    raise ConfigError(f"{where}: {key}: {exc}") from exc
        created = times.get("created") or parse_rfc3339("1970-01-01T00:00:00Z")
        return TokenRecord(name, sha256, grants, created, times.get("expires"))

    def add(self, record: TokenRecord) -> None:
        tokens = self._load(writing=True)
        if record.name in tokens:
            raise Conflict(f"a token named {record.name!r} exists in {self.path}")
        self._write([*tokens.values(), record])

    def get(self, name: str) -> TokenRecord | None:
        return self._load().get(name)

    def find(self, sha256: str) -> TokenRecord | None:
        found = None
        for record in self._load().values():
            if hmac.compare_digest(record.sha256, sha256):
                found = record
        return found

    def all(self) -> list[TokenRecord]:
        return sorted(self._load().values(), key=lambda r: r.name)

    def empty(self) -> bool:
        return not self._load()

    def revoke(self, name: str) -> TokenRecord:
        tokens = self._load(writing=True)
        if name not in tokens:
            raise NotFound(f"there is no token named {name!r} in {self.path}")
        self._write([r for r in tokens.values() if r.name != name])
        return tokens[name]

    def _write(self, records: list[TokenRecord]) -> None:
        text = "# statekeeper API tokens: names, SHA-256 hashes, grants, expiry.\n\n"
        text += "\n".join(r.to_toml() for r in sorted(records, key=lambda r: r.name))
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise StorageError(f"cannot write the tokens file {self.path}: {exc}") from exc
