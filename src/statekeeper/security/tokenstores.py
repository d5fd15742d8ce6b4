"""Where API tokens are kept: two stores of :class:`~statekeeper.security.tokens.TokenRecord`.

- :class:`SqliteTokenStore`, a ``tokens`` table in the embedded database;
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

import hmac
import json
import os
import re
import sqlite3
import threading
from pathlib import Path

from statekeeper.errors import BadRequest, ConfigError, Conflict, NotFound, StorageError
from statekeeper.security.grants import parse_grants
from statekeeper.security.tokens import TokenRecord, validate_token_name
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.times import format_rfc3339, parse_rfc3339

__all__ = ["FileTokenStore", "SqliteTokenStore"]


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tokens (
        name TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        created TEXT NOT NULL,
        expires TEXT
    )""",
)


class SqliteTokenStore:
    """The ``tokens`` table of the embedded database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

        def create(conn: sqlite3.Connection) -> None:
            for statement in _SCHEMA:
                conn.execute(statement)

        db.run(create, write=True)

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

    def _one(self, where: str, value: str) -> TokenRecord | None:
        sql = f"SELECT name, sha256, scopes, created, expires FROM tokens WHERE {where} = ?"
        row = self.db.run(lambda db: db.execute(sql, (value,)).fetchone())
        return self._record(row) if row else None

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

        self.db.run(tx, write=True)

    def get(self, name: str) -> TokenRecord | None:
        return self._one("name", name)

    def find(self, sha256: str) -> TokenRecord | None:
        return self._one("sha256", sha256)

    def all(self) -> list[TokenRecord]:
        rows = self.db.run(
            lambda db: db.execute(
                "SELECT name, sha256, scopes, created, expires FROM tokens ORDER BY name"
            ).fetchall()
        )
        return [self._record(r) for r in rows]

    def empty(self) -> bool:
        row = self.db.run(lambda db: db.execute("SELECT EXISTS (SELECT 1 FROM tokens)").fetchone())
        return not row[0]

    def revoke(self, name: str) -> TokenRecord:
        def tx(db: sqlite3.Connection) -> TokenRecord:
            row = db.execute(
                "SELECT name, sha256, scopes, created, expires FROM tokens WHERE name = ?",
                (name,),
            ).fetchone()
            if row is None:
                raise NotFound(f"there is no token named {name!r}; see 'statekeeper token list'")
            db.execute("DELETE FROM tokens WHERE name = ?", (name,))
            return self._record(row)

        return self.db.run(tx, write=True)


class FileTokenStore:
    """Tokens in an operator-provided TOML file, re-read whenever it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._guard = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._tokens: dict[str, TokenRecord] = {}

    def _load(self) -> dict[str, TokenRecord]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StorageError(f"cannot read the tokens file {self.path}: {exc}") from exc
        stamp = (st.st_mtime_ns, st.st_size)
        with self._guard:
            if stamp != self._stamp:
                self._tokens = self._parse()
                self._stamp = stamp
            return self._tokens

    def _parse(self) -> dict[str, TokenRecord]:
        import tomllib  # here: only a tokens file needs it

        try:
            raw = tomllib.loads(self.path.read_text())
        except OSError as exc:
            raise StorageError(f"cannot read the tokens file {self.path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the tokens file {self.path} is not valid TOML: {exc}") from exc
        tokens = raw.get("tokens", {})
        if not isinstance(tokens, dict):
            raise ConfigError(f"{self.path}: 'tokens' must be a table of [tokens.NAME] tables")
        out: dict[str, TokenRecord] = {}
        for name, entry in tokens.items():
            where = f"{self.path}: [tokens.{name}]"
            try:
                validate_token_name(name)
                sha256 = entry["sha256"]
                if not re.fullmatch(r"[0-9a-f]{64}", sha256):
                    raise ValueError("sha256 must be 64 lowercase hex digits")
                scopes = tuple(str(g) for g in parse_grants(list(entry.get("scopes", []))))
                created = parse_rfc3339(str(entry.get("created", "1970-01-01T00:00:00Z")))
                expires = parse_rfc3339(str(entry["expires"])) if entry.get("expires") else None
            except (KeyError, TypeError, ValueError, BadRequest) as exc:
                raise ConfigError(f"{where} is not valid: {exc}") from exc
            out[name] = TokenRecord(name, sha256, scopes, created, expires)
        return out

    def add(self, record: TokenRecord) -> None:
        if record.name in self._load():
            raise Conflict(f"a token named {record.name!r} exists in {self.path}")
        self._write([*self._load().values(), record])

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
        tokens = self._load()
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
