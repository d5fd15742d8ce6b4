"""The key ring: data keys wrapped by a master key, kept *beside* the state.

A key ring entry is ``id -> (master key id, wrapped data key)``. Rotating the
master key re-wraps the entries and never rewrites a state version (history
stays immutable).

The ring also records which master keys the store is encrypted with: for
each, its id and a *key check value* (a known block wrapped by that key, which
only the key opens; never the key). Opening a store checks the keys given
against that record (:func:`check_master_keys`): a key the store was not
written with is refused. Versions are therefore never mixed across keys by a
mistake in the settings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from statekeeper.errors import ConfigError, StatekeeperError
from statekeeper.storage.base import ObjectStore, RecordSpace
from statekeeper.storage.masterkeys import MasterKey
from statekeeper.storage.sqlite.database import SqliteDatabase

__all__ = [
    "ACTIVE",
    "KEYS_PREFIX",
    "RESERVED_PREFIX",
    "RETIRED",
    "KeyRing",
    "MasterRecord",
    "RotationReport",
    "SqliteKeyRing",
    "StoreKeyRing",
    "WrappedKey",
    "check_master_keys",
    "open_keyring",
    "rotate",
]

# '!' cannot appear in a state name, so these keys never collide with a state.
RESERVED_PREFIX = "statekeeper!/"
KEYS_PREFIX = RESERVED_PREFIX + "keys/"
MASTERS_KEY = RESERVED_PREFIX + "master-keys.json"


@dataclass(frozen=True)
class WrappedKey:
    kid: str
    wrapped: bytes


#: What a key check value wraps: a fixed block under a fixed id. Opening it proves
#: that a key is the one recorded, without the record holding anything secret.
_CHECK_ID = "statekeeper-key-check"
_CHECK_BLOCK = hashlib.sha256(b"statekeeper key check value").digest()
ACTIVE = "active"
RETIRED = "retired"


@dataclass(frozen=True)
class MasterRecord:
    """A master key the store is (``active``) or was (``retired``) encrypted with."""

    status: str
    #: The check block wrapped by the key; None for keys recorded from an old key ring.
    check: bytes | None = None

    @classmethod
    def for_key(cls, key: MasterKey) -> MasterRecord:
        return cls(ACTIVE, key.wrap(_CHECK_ID, _CHECK_BLOCK))

    def opens_with(self, key: MasterKey) -> bool:
        """True when ``key`` opens this record's check value (or there is none to open)."""
        if self.check is None:
            return True
        try:
            return key.unwrap(_CHECK_ID, self.check) == _CHECK_BLOCK
        except StatekeeperError:
            return False


class KeyRing(Protocol):
    def put(self, dek_id: str, entry: WrappedKey) -> None:
        """Store (or replace, on rotation) the wrapped data key ``dek_id``."""
        ...

    def get(self, dek_id: str) -> WrappedKey | None: ...

    def scan(self) -> Iterator[tuple[str, WrappedKey]]:
        """Every entry."""
        ...

    def masters(self) -> dict[str, MasterRecord]:
        """The master keys the store is or was encrypted with, by key id."""
        ...

    def put_master(self, kid: str, record: MasterRecord) -> None:
        """Record (or update) a master key of the store."""
        ...


def _create_tables(c: sqlite3.Connection) -> None:
    c.execute(
        "CREATE TABLE IF NOT EXISTS data_keys "
        "(id TEXT PRIMARY KEY, kid TEXT NOT NULL, wrapped BLOB NOT NULL)"
    )
    c.execute(
        "CREATE TABLE IF NOT EXISTS master_keys "
        "(kid TEXT PRIMARY KEY, status TEXT NOT NULL, check_value BLOB)"
    )


class SqliteKeyRing:
    """The ``data_keys`` table of the embedded database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.run(_create_tables, write=True)

    def masters(self) -> dict[str, MasterRecord]:
        rows = self.db.run(
            lambda c: c.execute("SELECT kid, status, check_value FROM master_keys").fetchall()
        )
        if not rows:
            # A key ring from before master keys were recorded: its entries say.
            rows = self.db.run(
                lambda c: c.execute(
                    "SELECT DISTINCT kid, ?, NULL FROM data_keys", (ACTIVE,)
                ).fetchall()
            )
        return {
            kid: MasterRecord(status, bytes(check) if check else None)
            for kid, status, check in rows
        }

    def put_master(self, kid: str, record: MasterRecord) -> None:
        self.db.run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO master_keys VALUES (?, ?, ?)",
                (kid, record.status, record.check),
            ),
            write=True,
        )

    def put(self, dek_id: str, entry: WrappedKey) -> None:
        self.db.run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO data_keys VALUES (?, ?, ?)",
                (dek_id, entry.kid, entry.wrapped),
            ),
            write=True,
        )

    def get(self, dek_id: str) -> WrappedKey | None:
        def tx(c: sqlite3.Connection) -> WrappedKey | None:
            row = c.execute("SELECT kid, wrapped FROM data_keys WHERE id = ?", (dek_id,)).fetchone()
            return WrappedKey(row[0], bytes(row[1])) if row else None

        return self.db.run(tx)

    def scan(self) -> Iterator[tuple[str, WrappedKey]]:
        rows = self.db.run(lambda c: c.execute("SELECT id, kid, wrapped FROM data_keys").fetchall())
        for dek_id, kid, wrapped in rows:
            yield dek_id, WrappedKey(kid, bytes(wrapped))


class StoreKeyRing:
    """Entries as small JSON objects under ``statekeeper!/keys/`` of any ObjectStore."""

    def __init__(self, store: ObjectStore, prefix: str = KEYS_PREFIX) -> None:
        self.store = store
        self.prefix = prefix

    def put(self, dek_id: str, entry: WrappedKey) -> None:
        body = {"kid": entry.kid, "wrapped": base64.b64encode(entry.wrapped).decode()}
        self.store.put(self.prefix + dek_id, json.dumps(body).encode(), {})

    def _decode(self, data: bytes) -> WrappedKey:
        raw = json.loads(data)
        return WrappedKey(raw["kid"], base64.b64decode(raw["wrapped"]))

    def get(self, dek_id: str) -> WrappedKey | None:
        obj = self.store.get(self.prefix + dek_id)
        return self._decode(obj.data) if obj else None

    def scan(self) -> Iterator[tuple[str, WrappedKey]]:
        for info in self.store.scan(self.prefix):
            obj = self.store.get(info.key)
            if obj is not None:
                yield info.key[len(self.prefix) :], self._decode(obj.data)

    def masters(self) -> dict[str, MasterRecord]:
        obj = self.store.get(MASTERS_KEY)
        if obj is None:
            # A key ring from before master keys were recorded: its entries say.
            return {entry.kid: MasterRecord(ACTIVE) for _, entry in self.scan()}
        raw = json.loads(obj.data)
        return {
            kid: MasterRecord(r["status"], base64.b64decode(r["check"]) if r.get("check") else None)
            for kid, r in raw.items()
        }

    def put_master(self, kid: str, record: MasterRecord) -> None:
        # Read-modify-write: master keys change at the first encrypted start and on
        # rotation, operator actions that are not run concurrently.
        known = self.masters()
        known[kid] = record
        body = {
            k: {
                "status": r.status,
                "check": base64.b64encode(r.check).decode() if r.check else None,
            }
            for k, r in known.items()
        }
        self.store.put(MASTERS_KEY, json.dumps(body, sort_keys=True).encode(), {})


@dataclass(frozen=True)
class RotationReport:
    rewrapped: int
    already_new: int
    other: int


def rotate(ring: KeyRing, old: MasterKey, new: MasterKey) -> RotationReport:
    """Re-wrap every data key of ``old`` with ``new``; state bytes are not touched.

    The store's record then names ``new`` as its key and ``old`` as retired: a
    server started with the old key alone is refused from then on, and one
    running with ``old,new`` seals with ``new`` from its next write.
    """
    known = ring.masters()
    active = sorted(kid for kid, r in known.items() if r.status == ACTIVE)
    if not active:
        # Recording the new key here would turn encryption on by the back door: every
        # later write without that key would be refused, and none is encrypted.
        raise ConfigError(
            "encryption at rest is off on this store (no master key was ever configured "
            "for it), so there is nothing to rotate; nothing was changed. To turn "
            "encryption on, set STATEKEEPER_MASTER_KEY (or STATEKEEPER_MASTER_KEY_FILE) "
            "to the new key and restart: new versions are then encrypted (docs/security.md)"
        )
    if old.kid not in known:
        raise ConfigError(
            f"the old key {old.kid} is not one this store is encrypted with "
            f"({', '.join(active)}); give the key the servers use now"
        )
    if known[old.kid].status != ACTIVE:
        raise ConfigError(
            f"the old key {old.kid} was retired by an earlier rotation; this store is "
            f"encrypted with {', '.join(active)}: give that key as the old key"
        )
    if not known[old.kid].opens_with(old):
        raise ConfigError(f"the old key does not open this store's key check for {old.kid}")
    # The new key is recorded first: data keys re-wrapped by it must never be
    # under a key the store does not know.
    ring.put_master(new.kid, MasterRecord.for_key(new))
    first = _rewrap(ring, old, new)
    if old.kid == new.kid:
        return first
    ring.put_master(old.kid, replace(known[old.kid], status=RETIRED))
    # A server still running with the old key may have stored a data key after the
    # first pass read the ring. Such a server checks, after storing it, that its key
    # is still active (EncryptingStore): before the mark above it goes on, and this
    # pass re-wraps its key; after it, it re-wraps that key by the new one itself
    # when it is configured with it, and otherwise refuses the write.
    late = _rewrap(ring, old, new)
    return RotationReport(first.rewrapped + late.rewrapped, first.already_new, first.other)


def _rewrap(ring: KeyRing, old: MasterKey, new: MasterKey) -> RotationReport:
    """One pass over the ring: every data key under ``old`` re-wrapped by ``new``."""
    rewrapped = already = other = 0
    for dek_id, entry in list(ring.scan()):
        if entry.kid == new.kid:
            already += 1
        elif entry.kid == old.kid:
            dek = old.unwrap(dek_id, entry.wrapped)
            ring.put(dek_id, WrappedKey(new.kid, new.wrap(dek_id, dek)))
            rewrapped += 1
        else:
            other += 1
    return RotationReport(rewrapped, already, other)


def check_master_keys(
    ring: KeyRing, keys: list[MasterKey], *, register: bool = True
) -> frozenset[str]:
    """Check ``keys`` against the master keys the store records; its active key ids.

    - A store never encrypted takes any key (the first is recorded, unless
      ``register`` is False: a read-only use must not turn encryption on) or none.
    - An encrypted store needs its key first in the list: any other key would
      wrap new data keys no server with the store's key can open. A later key may
      be one the store does not know yet (the next rotation's new key): it only
      opens, and the process seals with it once a rotation makes it the store's
      key (:class:`~statekeeper.storage.encrypting.EncryptingStore`), so nothing
      can have been sealed under it.
    - Every key given that the store knows must open its recorded check value (a
      KMS key ID that names another key, or a key without access, fails here, not
      at the first read).
    """
    known = ring.masters()
    active = frozenset(kid for kid, r in known.items() if r.status == ACTIVE)
    if not keys:
        return active
    first = keys[0]
    if not active:
        if not register:
            return active
        ring.put_master(first.kid, MasterRecord.for_key(first))
        return frozenset({first.kid})
    for position, key in enumerate(keys):
        record = known.get(key.kid)
        if record is None and position > 0:
            continue
        if record is None or (position == 0 and record.status != ACTIVE):
            why = (
                "was retired by a rotation"
                if record is not None
                else "is not one it was written with"
            )
            raise ConfigError(
                f"this store is encrypted with the master key {', '.join(sorted(active))}; "
                f"the key given{'' if len(keys) == 1 else f' in position {position + 1}'} "
                f"({key.kid}) {why}. Versions written under it could not be read with the "
                "store's key, so the store was not opened: set STATEKEEPER_MASTER_KEY to the "
                "store's key (to change keys, run 'statekeeper encryption rotate')"
            )
        if not record.opens_with(key):
            raise ConfigError(
                f"the master key given as {key.kid} does not open this store's key check "
                "value for that key: it is another key under the same name, or this "
                "process may not use it (KMS permissions)"
            )
        if record.check is None and register:
            # Recorded from an old key ring: add the check value now that the key is here.
            ring.put_master(key.kid, replace(record, check=MasterRecord.for_key(key).check))
    return active


def open_keyring(records: RecordSpace) -> KeyRing:
    """The key ring in ``records``: a table of the embedded database, else objects."""
    if records.database is not None:
        return SqliteKeyRing(records.database)
    return StoreKeyRing(records.objects)
