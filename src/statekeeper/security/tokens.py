"""API tokens: issued once, stored only as SHA-256 hashes, compared in constant time.

A token is ``skt_`` followed by 32 random bytes (url-safe base64): far too
much entropy to guess, so a plain SHA-256 is the right hash (a slow password
hash would only slow every request down). The secret is shown once, at
creation; the store keeps its name, hash, grants and expiry. Where the store
keeps them is :mod:`statekeeper.security.tokenstores`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from statekeeper.errors import BadRequest, CapabilityMissing, StorageError
from statekeeper.events import Action, EventStream
from statekeeper.patterns import END, any_case, whole
from statekeeper.security.caller import RESERVED_ACTORS, Caller
from statekeeper.security.grants import parse_grants
from statekeeper.security.policy import Permission, Policy, require
from statekeeper.storage.base import RecordSpace
from statekeeper.times import format_rfc3339, utcnow

__all__ = [
    "TOKEN_NAME_PATTERN",
    "TOKEN_PREFIX",
    "IssuedToken",
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
_NAME_BODY = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_NAME = re.compile(_NAME_BODY)
#: What :func:`validate_token_name` takes, as a JSON Schema pattern (:mod:`statekeeper.patterns`).
TOKEN_NAME_PATTERN = whole(
    f"(?!(?:{'|'.join(any_case(a) for a in sorted(RESERVED_ACTORS))}){END}){_NAME_BODY}"
)


def validate_token_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadRequest(
            f"{name!r} is not a token name: use 1-64 letters, digits and '._-', starting "
            "with a letter or digit (it is the username in Terraform's backend block)"
        )
    if name.lower() in RESERVED_ACTORS:
        raise BadRequest(
            f"{name!r} is not a token name: the audit trail and history name callers that "
            f"are no token so ({', '.join(sorted(RESERVED_ACTORS))}), and a token's actions "
            "would pass for theirs; choose another name"
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


def open_token_store(records: RecordSpace, tokens_file: Path | None) -> TokenStore | None:
    """The operator's tokens file if one is set, else the embedded database's table.

    None for a store without a database (S3) and no tokens file: such a server
    authenticates by OIDC only, or not at all.
    """
    # Imported here: the stores are built on this module's records.
    from statekeeper.security.tokenstores import FileTokenStore, SqliteTokenStore

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
