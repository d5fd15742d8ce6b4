"""Encryption at rest: envelope encryption of every state version, opt-in.

Each version is encrypted with AES-256-GCM under a fresh 256-bit data key.
The data key is wrapped by a master key, a local 32-byte key
(``STATEKEEPER_MASTER_KEY`` / ``_FILE``, base64) or an AWS KMS key
(``awskms://KEY-ID-OR-ALIAS-OR-ARN``), and kept in a key ring *beside* the
state, not inside it: rotating the master key re-wraps the data keys and
never rewrites a state version (history stays immutable).

Stored bytes of an encrypted version::

    b"SKE1" | data-key id (36 ASCII bytes, a UUID) | nonce (12) | ciphertext+tag

with ``b"SKE1" + id`` as associated data. A key ring entry is
``id -> (master key id, wrapped data key)``; the master key id (``local:<8 hex
of sha256>`` or ``awskms:<key>``) lets entries wrapped by an old and a new
master key coexist during a rotation.

The store also records which master keys it is encrypted with: for each, its
id and a *key check value* (a known block wrapped by that key, which only the
key opens; never the key). Opening a store checks the keys given against that
record (:func:`check_master_keys`): a key the store was not written with is
refused, and a store that holds encrypted states refuses to take a plaintext
write when no key is given. Versions are therefore never mixed across keys, or
plaintext with ciphertext, by a mistake in the settings.

Clients never see ciphertext: :class:`EncryptingStore` wraps the store and
hands services plaintext. Object metadata keeps serial, lineage and the
sha256 *of the plaintext* (the services compute them), so history and the
serial/lineage guard work as before. A state stored encrypted is unreadable
by Terraform's own ``backend "s3"``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import sqlite3
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from statekeeper.errors import ConfigError, MissingDependency, StatekeeperError, StorageError
from statekeeper.events import Action, EventStream
from statekeeper.storage.base import (
    DeletedState,
    ObjectInfo,
    ObjectStore,
    ObjectStream,
    RecordSpace,
    StoredObject,
    Upload,
)
from statekeeper.storage.sqlite.database import SqliteDatabase

if TYPE_CHECKING:
    from statekeeper.security.caller import Caller

__all__ = [
    "KEYS_PREFIX",
    "MAGIC",
    "RESERVED_PREFIX",
    "EncryptingStore",
    "KeyRing",
    "KeyService",
    "KmsMasterKey",
    "LocalMasterKey",
    "MasterKey",
    "MasterRecord",
    "RotationReport",
    "SqliteKeyRing",
    "StoreKeyRing",
    "check_master_keys",
    "encrypting",
    "is_encrypted",
    "open_keyring",
    "parse_master_key",
    "parse_master_keys",
    "rotate",
]

MAGIC = b"SKE1"
# '!' cannot appear in a state name, so these keys never collide with a state.
RESERVED_PREFIX = "statekeeper!/"
KEYS_PREFIX = RESERVED_PREFIX + "keys/"
MASTERS_KEY = RESERVED_PREFIX + "master-keys.json"
_ID_LEN = 36
_NONCE = 12
META_ENC = "sk-enc"
META_SIZE = "sk-size"


def _aesgcm(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def is_encrypted(data: bytes) -> bool:
    return data.startswith(MAGIC)


class MasterKey(Protocol):
    #: Names the key in key ring entries: ``local:…`` or ``awskms:…``.
    kid: str

    def wrap(self, dek_id: str, dek: bytes) -> bytes:
        """Encrypt a data key, bound to its id."""
        ...

    def unwrap(self, dek_id: str, wrapped: bytes) -> bytes:
        """Decrypt a data key wrapped by :meth:`wrap`."""
        ...


class LocalMasterKey:
    """A 32-byte key held by the server: AES-256-GCM key wrapping."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError(
                f"the master key is {len(key)} bytes; it must be 32 random bytes in base64 "
                "(make one with: openssl rand -base64 32)"
            )
        self._aead = _aesgcm(key)
        self.kid = "local:" + hashlib.sha256(b"statekeeper-kid" + key).hexdigest()[:16]

    def wrap(self, dek_id: str, dek: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed: bytes = self._aead.encrypt(nonce, dek, dek_id.encode())
        return nonce + sealed

    def unwrap(self, dek_id: str, wrapped: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            dek: bytes = self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], dek_id.encode())
        except InvalidTag as exc:
            raise ConfigError(
                f"the data key {dek_id} does not decrypt with the master key {self.kid}; "
                "the key ring entry is damaged or was wrapped by another key"
            ) from exc
        return dek


class KmsMasterKey:
    """An AWS KMS key: Encrypt/Decrypt of each data key, with the id as context."""

    def __init__(self, key_id: str) -> None:
        try:
            from statekeeper.storage.aws import _boto
        except ImportError as exc:
            raise MissingDependency(
                "awskms:// master keys need boto3: pip install 'statekeeper[aws]'"
            ) from exc
        self.key_id = key_id
        self.kid = f"awskms:{key_id}"
        self._boto = _boto
        self._client = _boto.client("kms")

    def wrap(self, dek_id: str, dek: bytes) -> bytes:
        try:
            answer = self._client.encrypt(
                KeyId=self.key_id, Plaintext=dek, EncryptionContext={"statekeeper-dek": dek_id}
            )
        except Exception as exc:  # noqa: BLE001 - botocore errors are translated
            self._boto.translate(exc, "kms:Encrypt", self.key_id)
        blob: bytes = answer["CiphertextBlob"]
        return blob

    def unwrap(self, dek_id: str, wrapped: bytes) -> bytes:
        try:
            answer = self._client.decrypt(
                KeyId=self.key_id,
                CiphertextBlob=wrapped,
                EncryptionContext={"statekeeper-dek": dek_id},
            )
        except Exception as exc:  # noqa: BLE001 - botocore errors are translated
            self._boto.translate(exc, "kms:Decrypt", self.key_id)
        dek: bytes = answer["Plaintext"]
        return dek


def parse_master_key(text: str) -> MasterKey:
    """``awskms://KEY`` or 32 bytes in base64; the error never echoes the secret."""
    text = text.strip()
    if text.startswith("awskms://"):
        key_id = text.removeprefix("awskms://")
        if not key_id:
            raise ConfigError("awskms:// needs a key: awskms://KEY-ID, alias/NAME or an ARN")
        return KmsMasterKey(key_id)
    try:
        # Standard or url-safe alphabet, padding optional.
        std = text.replace("-", "+").replace("_", "/")
        raw = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(
            "the master key is not base64 (32 random bytes) nor an awskms:// URL"
        ) from exc
    return LocalMasterKey(raw)


def parse_master_keys(text: str) -> list[MasterKey]:
    """Comma-separated keys: the first wraps new data keys, all of them unwrap."""
    keys = [parse_master_key(part) for part in text.split(",") if part.strip()]
    if not keys:
        raise ConfigError("the master key setting is empty")
    return keys


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


class SqliteKeyRing:
    """The ``data_keys`` table of the embedded database."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.run(
            lambda c: c.execute(
                "CREATE TABLE IF NOT EXISTS data_keys "
                "(id TEXT PRIMARY KEY, kid TEXT NOT NULL, wrapped BLOB NOT NULL)"
            ),
            write=True,
        )
        db.run(
            lambda c: c.execute(
                "CREATE TABLE IF NOT EXISTS master_keys "
                "(kid TEXT PRIMARY KEY, status TEXT NOT NULL, check_value BLOB)"
            ),
            write=True,
        )

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


class EncryptingStore(ObjectStore):
    """An ObjectStore that encrypts what it puts and decrypts what it gets.

    Without master keys it still reads plaintext and refuses, with a clear
    message, to hand out an encrypted version it cannot decrypt; when the store
    is encrypted (``sealed_with`` names its active master keys), it also refuses
    to write plaintext.
    """

    def __init__(
        self,
        inner: ObjectStore,
        ring: KeyRing,
        keys: list[MasterKey],
        sealed_with: frozenset[str] = frozenset(),
    ) -> None:
        self.inner = inner
        self.ring = ring
        self.keys = {k.kid: k for k in keys}
        self.current = keys[0] if keys else None
        self.sealed_with = sealed_with
        self.scheme = inner.scheme
        self.supports_versions = inner.supports_versions
        self.supports_conditional_put = inner.supports_conditional_put
        self.supports_compare_and_swap = inner.supports_compare_and_swap
        self.supports_history_edits = inner.supports_history_edits
        self.costly_listing = inner.costly_listing
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._guard = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.current is not None

    @property
    def lock_namespace(self) -> str:
        return self.inner.lock_namespace

    def full_key(self, key: str) -> str:
        return self.inner.full_key(key)

    def require_key(self) -> None:
        """Refuse to go on without a key when the store is encrypted (``serve`` starts)."""
        if self.current is None and self.sealed_with:
            raise ConfigError(
                "this store holds states encrypted with the master key "
                f"{', '.join(sorted(self.sealed_with))}, and no key is configured: new "
                "versions would be stored in plaintext beside them. Set "
                "STATEKEEPER_MASTER_KEY (or STATEKEEPER_MASTER_KEY_FILE) to that key"
            )

    @property
    def records(self) -> RecordSpace:
        return self.inner.records

    @property
    def history_warning(self) -> str | None:
        return self.inner.history_warning

    def _seal(self, data: bytes, metadata: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
        if self.current is None:
            self.require_key()
            return data, dict(metadata)
        dek_id = str(uuid.uuid4())
        dek = os.urandom(32)
        # The key goes in first: a stored version never lacks its data key.
        self.ring.put(dek_id, WrappedKey(self.current.kid, self.current.wrap(dek_id, dek)))
        header = MAGIC + dek_id.encode()
        nonce = os.urandom(_NONCE)
        sealed = header + nonce + _aesgcm(dek).encrypt(nonce, data, header)
        return sealed, {**metadata, META_ENC: "aes256gcm", META_SIZE: str(len(data))}

    def _data_key(self, dek_id: str, key: str) -> bytes:
        with self._guard:
            if dek_id in self._cache:
                self._cache.move_to_end(dek_id)
                return self._cache[dek_id]
        entry = self.ring.get(dek_id)
        if entry is None:
            raise StorageError(
                f"{key} is encrypted with data key {dek_id}, which the key ring lacks"
            )
        master = self.keys.get(entry.kid)
        if master is None:
            have = ", ".join(self.keys) or "none (encryption is not configured)"
            raise ConfigError(
                f"{key} is encrypted under the master key {entry.kid}, which this server "
                f"does not hold (it holds: {have}); set STATEKEEPER_MASTER_KEY"
            )
        dek = master.unwrap(dek_id, entry.wrapped)
        with self._guard:
            self._cache[dek_id] = dek
            while len(self._cache) > 256:
                self._cache.popitem(last=False)
        return dek

    def decrypt(self, key: str, data: bytes) -> bytes:
        """The plaintext of a stored version's bytes (as they are); ``key`` names it in errors."""
        return self._open(key, data)

    def _open(self, key: str, data: bytes) -> bytes:
        if not is_encrypted(data):
            return data
        from cryptography.exceptions import InvalidTag

        header = data[: len(MAGIC) + _ID_LEN]
        dek_id = header[len(MAGIC) :].decode("ascii", "replace")
        body = data[len(header) :]
        try:
            plain: bytes = _aesgcm(self._data_key(dek_id, key)).decrypt(
                body[:_NONCE], body[_NONCE:], header
            )
        except InvalidTag as exc:
            raise StorageError(
                f"{key} failed authentication on decryption: it was altered"
            ) from exc
        return plain

    @staticmethod
    def _plain_info(info: ObjectInfo) -> ObjectInfo:
        size = info.metadata.get(META_SIZE)
        if size is not None and size.isdigit():
            return replace(info, size=int(size))
        return info

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        sealed, meta = self._seal(data, metadata)
        return self._plain_info(self.inner.put(key, sealed, meta))

    def put_if_absent(self, key: str, data: bytes, metadata: Mapping[str, str]) -> bool:
        sealed, meta = self._seal(data, metadata)
        return self.inner.put_if_absent(key, sealed, meta)

    def replace(
        self, key: str, data: bytes, metadata: Mapping[str, str], expected: ObjectInfo | None
    ) -> ObjectInfo:
        # ``expected`` came from this wrapper: only its size differs from the
        # inner store's, and the inner store compares version IDs and ETags.
        sealed, meta = self._seal(data, metadata)
        return self._plain_info(self.inner.replace(key, sealed, meta, expected))

    def get(self, key: str, version_id: str | None = None) -> StoredObject | None:
        obj = self.inner.get(key, version_id)
        if obj is None:
            return None
        return StoredObject(self._plain_info(obj.info), self._open(key, obj.data))

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        info = self.inner.head(key, version_id)
        return self._plain_info(info) if info else None

    def upload(self, key: str) -> Upload:
        # AES-GCM seals the whole document at once, so with a key the upload is
        # gathered in memory (the default); without one the inner store's
        # streaming upload is used as it is.
        if self.current is not None:
            return super().upload(key)
        self.require_key()
        return self.inner.upload(key)

    def open(self, key: str, version_id: str | None = None) -> ObjectStream | None:
        opened = self.inner.open(key, version_id)
        if opened is None or META_ENC not in opened.info.metadata:
            return opened
        close = getattr(opened.chunks, "close", None)
        if close is not None:
            close()
        return super().open(key, version_id)  # decrypted whole, as by get()

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def scan(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for info in self.inner.scan(prefix):
            yield self._plain_info(info)

    def versions(self, key: str) -> list[ObjectInfo]:
        return [self._plain_info(i) for i in self.inner.versions(key)]

    def version_before(self, key: str, version_id: str) -> str | None:
        return self.inner.version_before(key, version_id)

    def delete_version(self, key: str, version_id: str) -> None:
        self.inner.delete_version(key, version_id)

    def deleted(self, prefix: str = "") -> Iterator[DeletedState]:
        return self.inner.deleted(prefix)

    def undelete(self, key: str) -> ObjectInfo:
        return self._plain_info(self.inner.undelete(key))

    def purge(self, key: str) -> int:
        return self.inner.purge(key)

    def close(self) -> None:
        self.inner.close()

    def probe(self) -> None:
        self.inner.probe()

    def unencrypted(self, prefix: str = "") -> list[str]:
        """Current states stored in plaintext (for doctor and ``encryption status``)."""
        out = []
        for info in self.inner.scan(prefix):
            if info.key.startswith(RESERVED_PREFIX):
                continue
            meta = info.metadata if info.has_metadata else None
            if meta is None:
                head = self.inner.head(info.key)
                meta = head.metadata if head else {}
            if META_ENC not in meta:
                out.append(info.key)
        return out


@dataclass(frozen=True)
class RotationReport:
    rewrapped: int
    already_new: int
    other: int


def rotate(ring: KeyRing, old: MasterKey, new: MasterKey) -> RotationReport:
    """Re-wrap every data key of ``old`` with ``new``; state bytes are not touched.

    The store's record then names ``new`` as its key and ``old`` as retired: a
    server started with the old key alone is refused from then on.
    """
    known = ring.masters()
    if known and old.kid not in known:
        raise ConfigError(
            f"the old key {old.kid} is not one this store is encrypted with "
            f"({', '.join(sorted(known))}); give the key the servers use now"
        )
    if old.kid in known and not known[old.kid].opens_with(old):
        raise ConfigError(f"the old key does not open this store's key check for {old.kid}")
    # The new key is recorded first: data keys re-wrapped by it must never be
    # under a key the store does not know.
    ring.put_master(new.kid, MasterRecord.for_key(new))
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
    if old.kid != new.kid:
        ring.put_master(
            old.kid, replace(known.get(old.kid) or MasterRecord(ACTIVE), status=RETIRED)
        )
    return RotationReport(rewrapped, already, other)


def check_master_keys(
    ring: KeyRing, keys: list[MasterKey], *, register: bool = True
) -> frozenset[str]:
    """Check ``keys`` against the master keys the store records; its active key ids.

    - A store never encrypted takes any key (the first is recorded, unless
      ``register`` is False: a read-only use must not turn encryption on) or none.
    - An encrypted store needs its key first in the list: any other key would
      wrap new data keys no server with the store's key can open. Later keys must
      be keys the store knows (a rotation's old key).
    - Every key given must open its recorded check value (a KMS key ID that
      names another key, or a key without access, fails here, not at the first read).
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
                "store's key, so nothing was started: set STATEKEEPER_MASTER_KEY to the "
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


def encrypting(
    store: ObjectStore, master_key: str | None, *, register: bool = True
) -> EncryptingStore:
    """``store`` behind encryption: on when ``master_key`` is set, reads always decrypt.

    Raises ConfigError when ``master_key`` is not the key the store is encrypted with.
    """
    keys = parse_master_keys(master_key) if master_key else []
    ring = open_keyring(store.records)
    return EncryptingStore(store, ring, keys, check_master_keys(ring, keys, register=register))


class KeyService:
    """Encryption at rest as the operator manages it: what is sealed, and key rotation.

    Rotation is an operator command on the store itself (no HTTP route), so it
    is not subject to grants; it is audited like every change.
    """

    def __init__(self, store: EncryptingStore, events: EventStream) -> None:
        self.store = store
        self.events = events

    @property
    def current_kid(self) -> str | None:
        """The master key new versions are sealed with; None when encryption is off."""
        return self.store.current.kid if self.store.current is not None else None

    def unencrypted(self, prefix: str = "") -> list[str]:
        """Current states stored in plaintext."""
        return self.store.unencrypted(prefix)

    def rotate(self, caller: Caller, old: MasterKey, new: MasterKey) -> RotationReport:
        """Re-wrap every data key of ``old`` with ``new`` (one ``key-rotate`` event)."""
        with self.events.event(Action.KEY_ROTATE, caller) as event:
            report = rotate(self.store.ring, old, new)
            event.detail = (
                f"re-wrapped {report.rewrapped} data keys from {old.kid} to {new.kid} "
                f"({report.already_new} already under the new key, {report.other} under "
                "other keys)"
            )
            return report
