"""API tokens: issued once, stored only as SHA-256 hashes, compared in constant time.

A token is ``skt_`` followed by 32 random bytes (url-safe base64): far too
much entropy to guess, so a plain SHA-256 is the right hash (a slow password
hash would only slow every request down). The secret is shown once, at
creation; the store keeps its name, hash, grants and expiry.

Two stores:

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

import hashlib
import hmac
import json
import os
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from statekeeper.errors import (
    BadRequest,
    CapabilityMissing,
    ConfigError,
    Conflict,
    NotFound,
    StorageError,
)
from statekeeper.events import Action, EventStream
from statekeeper.security.caller import Caller
from statekeeper.security.grants import parse_grants
from statekeeper.security.policy import Permission, Policy, require
from statekeeper.storage.base import RecordSpace
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.times import format_rfc3339, parse_rfc3339, utcnow

__all__ = [
    "TOKEN_PREFIX",
    "FileTokenStore",
    "IssuedToken",
    "SqliteTokenStore",
    "TokenRecord",
    "TokenService",
    "TokenStore",
    "hash_secret",
    "issue",
    "open_token_store",
    "tokens_configured",
    "validate_token_name",
]

TOKEN_PREFIX = "skt_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def validate_token_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadRequest(
            f"{name!r} is not a token name: use 1-64 letters, digits and '._-', starting "
            "with a letter or digit (it is the username in Terraform's backend block)"
        )
    return name


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """What the store keeps about a token: never the secret itself."""

    name: str
    sha256: str
    scopes: tuple[str, ...]
    created: datetime
    expires: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires is not None and (now or utcnow()) >= self.expires

    def matches(self, secret: str) -> bool:
        """Constant-time comparison of the secret's hash with the stored one."""
        return hmac.compare_digest(hash_secret(secret), self.sha256)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "scopes": list(self.scopes),
            "created": format_rfc3339(self.created),
            "expires": format_rfc3339(self.expires) if self.expires else None,
        }

    def to_toml(self) -> str:
        lines = [
            f"[tokens.{json.dumps(self.name)}]",
            f"sha256 = {json.dumps(self.sha256)}",
            "scopes = [" + ", ".join(json.dumps(s) for s in self.scopes) + "]",
            f"created = {json.dumps(format_rfc3339(self.created))}",
        ]
        if self.expires:
            lines.append(f"expires = {json.dumps(format_rfc3339(self.expires))}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class IssuedToken:
    record: TokenRecord
    #: The secret, shown once and never stored.
    secret: str


def issue(name: str, scopes: list[str], expires_in: timedelta | None = None) -> IssuedToken:
    """A new token (not yet stored): a random secret and the record of its hash."""
    validate_token_name(name)
    if not scopes:
        raise BadRequest("a token needs at least one --scope PATTERN:PERMISSION")
    grants = parse_grants(scopes)
    if expires_in is not None and expires_in.total_seconds() <= 0:
        raise BadRequest("a token's lifetime must be longer than 0s, e.g. 90d or 12h")
    import secrets  # here: only a new token needs it, and it costs a CLI's start-up

    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow().replace(microsecond=0)
    record = TokenRecord(
        name=name,
        sha256=hash_secret(secret),
        scopes=tuple(str(g) for g in grants),
        created=now,
        expires=now + expires_in if expires_in else None,
    )
    return IssuedToken(record, secret)


class TokenStore(Protocol):
    def add(self, record: TokenRecord) -> None:
        """Store a new token; Conflict if the name is taken."""
        ...

    def get(self, name: str) -> TokenRecord | None:
        """The token called ``name``, or None."""
        ...

    def find(self, sha256: str) -> TokenRecord | None:
        """The token whose secret has this hash (Bearer tokens carry no name)."""
        ...

    def all(self) -> list[TokenRecord]:
        """Every token, by name."""
        ...

    def revoke(self, name: str) -> TokenRecord:
        """Remove the token; NotFound if there is none."""
        ...

    def empty(self) -> bool:
        """True when no token exists (a loopback server then needs no credentials)."""
        ...


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


def open_token_store(records: RecordSpace, tokens_file: Path | None) -> TokenStore | None:
    """The operator's tokens file if one is set, else the embedded database's table.

    None for a store without a database (S3) and no tokens file: such a server
    authenticates by OIDC only, or not at all.
    """
    if tokens_file is not None:
        return FileTokenStore(tokens_file)
    if records.database is not None:
        return SqliteTokenStore(records.database)
    return None


class TokenService:
    """API tokens as admins manage them: each change, and each refusal, is one event.

    Managing tokens needs ``admin`` on the server itself (every state); the
    local operator is not subject to grants. The secret is never in an event.
    """

    def __init__(self, store: TokenStore | None, policy: Policy, events: EventStream) -> None:
        #: None when tokens cannot be kept (an S3 store and no tokens file).
        self.store = store
        self.policy = policy
        self.events = events

    def _admin(self, caller: Caller, what: str) -> TokenStore:
        require(self.policy, caller, None, Permission.ADMIN, what)
        if self.store is None:
            raise CapabilityMissing(
                "this server keeps no API tokens (its store has no database and no "
                "tokens_file is set); configure tokens_file"
            )
        return self.store

    def create(
        self,
        caller: Caller,
        name: str,
        scopes: list[str],
        expires_in: timedelta | None = None,
    ) -> IssuedToken:
        """Issue and store a token; its secret is in the answer only."""
        with self.events.event(Action.TOKEN_CREATE, caller) as event:
            event.detail = f"token {name}"
            store = self._admin(caller, "create tokens on")
            issued = issue(name, scopes, expires_in)
            store.add(issued.record)
            event.detail = f"token {name}: " + " ".join(issued.record.scopes)
            return issued

    def revoke(self, caller: Caller, name: str) -> TokenRecord:
        """Remove a token: requests with it are refused from now on."""
        with self.events.event(Action.TOKEN_REVOKE, caller) as event:
            event.detail = f"token {name}"
            return self._admin(caller, "revoke tokens on").revoke(name)

    def all(self, caller: Caller) -> list[TokenRecord]:
        """Every token, by name (a refusal is recorded; a listing is not)."""
        with self.events.event(Action.TOKEN_LIST, caller, record_success=False):
            return self._admin(caller, "list the tokens of").all()


def tokens_configured(store_url: str, tokens_file: Path | None) -> bool:
    """Whether any token can exist, decided without creating or opening a store for writing.

    ``serve`` asks this before it binds or builds anything, so that a refused
    start leaves no database behind.
    """
    if tokens_file is not None:
        return True
    from statekeeper.storage.registry import DriverURL
    from statekeeper.storage.sqlite.database import database_path

    url = DriverURL.parse(store_url)
    if url.scheme != "sqlite":
        return False
    path = database_path(url)
    if not path.exists():
        return False
    try:
        with sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, timeout=30) as db:
            row = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tokens'"
            ).fetchone()
            return bool(row) and bool(
                db.execute("SELECT EXISTS (SELECT 1 FROM tokens)").fetchone()[0]
            )
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read the tokens of {path}: {exc}") from exc
