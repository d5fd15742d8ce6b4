"""Encryption at rest: envelope encryption of every state version, opt-in.

Each version is encrypted with AES-256-GCM under a fresh 256-bit data key.
The data key is wrapped by a master key (:mod:`statekeeper.storage.masterkeys`)
and kept in a key ring *beside* the state, not inside it
(:mod:`statekeeper.storage.keyring`).

Stored bytes of an encrypted version::

    b"SKE1" | data-key id (36 ASCII bytes, a UUID) | nonce (12) | ciphertext+tag

with ``b"SKE1" + id`` as associated data.

Opening a store checks the master keys given against those it records: a
first (sealing) key the store was not written with is refused, a later key
only opens until a rotation makes it the store's, and a store that holds encrypted
states refuses to take a plaintext write when no key is given. Versions are
therefore never mixed across keys, or plaintext with ciphertext, by a mistake
in the settings.

Clients never see ciphertext: :class:`EncryptingStore` wraps the store and
hands services plaintext. Object metadata keeps serial, lineage and the
sha256 *of the plaintext* (the services compute them), so history and the
serial/lineage guard work as before. A state stored encrypted is unreadable
by Terraform's own ``backend "s3"``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from statekeeper.errors import ConfigError, StorageError
from statekeeper.events import Action, EventStream
from statekeeper.storage.base import (
    DeletedState,
    ObjectInfo,
    ObjectStore,
    ObjectStream,
    RecordSpace,
    StoredObject,
    Upload,
    WithPrevious,
)
from statekeeper.storage.keyring import (
    ACTIVE,
    RESERVED_PREFIX,
    KeyRing,
    RotationReport,
    WrappedKey,
    check_master_keys,
    open_keyring,
    rotate,
)
from statekeeper.storage.masterkeys import NONCE, MasterKey, aesgcm, parse_master_keys

if TYPE_CHECKING:
    from statekeeper.security.caller import Caller

__all__ = [
    "MAGIC",
    "META_ENC",
    "META_SIZE",
    "EncryptingStore",
    "KeyService",
    "encrypting",
    "is_encrypted",
]

MAGIC = b"SKE1"
_ID_LEN = 36
META_ENC = "sk-enc"
META_SIZE = "sk-size"


def is_encrypted(data: bytes) -> bool:
    return data.startswith(MAGIC)


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
            keys = ", ".join(sorted(self.sealed_with))
            # The record is made when a key is first given, before any state is sealed:
            # say which it is, so that the message is true of a store with none sealed.
            if next(iter(self.ring.scan()), None) is None:
                what = f"is encrypted with the master key {keys} (no version is sealed yet)"
            else:
                what = f"holds states encrypted with the master key {keys}"
            raise ConfigError(
                f"this store {what}, and no key is configured: new versions would be "
                "stored in plaintext beside them. Set STATEKEEPER_MASTER_KEY (or "
                "STATEKEEPER_MASTER_KEY_FILE) to that key"
            )

    @property
    def records(self) -> RecordSpace:
        return self.inner.records

    @property
    def history_warning(self) -> str | None:
        return self.inner.history_warning

    def _seal(
        self, key: str, data: bytes, metadata: Mapping[str, str]
    ) -> tuple[bytes, dict[str, str]]:
        if self.current is None:
            self.require_key()
            return data, dict(metadata)
        current = self.current
        dek_id = str(uuid.uuid4())
        dek = os.urandom(32)
        # The key goes in first: a stored version never lacks its data key.
        self.ring.put(dek_id, WrappedKey(current.kid, current.wrap(dek_id, dek)))
        while (successor := self._require_active(current, key)) is not None:
            # Wrapped by the retired key, which the rotation's last pass may have
            # missed: under the store's key before the version that needs it is
            # stored, and checked again, as a later rotation may retire that key too.
            current = successor
            self.ring.put(dek_id, WrappedKey(current.kid, current.wrap(dek_id, dek)))
        # Kept as a read's data key is: once a rotation re-wraps it under a key this
        # process lacks, it still reads back what it wrote (Terraform's next GET).
        self._remember(dek_id, dek)
        header = MAGIC + dek_id.encode()
        nonce = os.urandom(NONCE)
        sealed = header + nonce + aesgcm(dek).encrypt(nonce, data, header)
        return sealed, {**metadata, META_ENC: "aes256gcm", META_SIZE: str(len(data))}

    def _require_active(self, current: MasterKey, key: str) -> MasterKey | None:
        """Never seal under a key that a rotation retired while this process ran.

        The rotation re-wraps the data keys it finds; one wrapped here by the old
        key after that would leave a version that the servers restarted with the
        new key alone cannot open, and that no later rotation re-wraps (the old
        key is retired). Checked after the data key is stored: a rotation retires
        the old key before its last pass, so that pass re-wraps this data key, or
        this check sees the key retired.

        Returns None while ``current`` is active. When it was retired and the
        store's key is one this process has (started with ``old,new``) and opens
        its check value, the process seals with that key from now on and returns
        it, for the caller to re-wrap the data key in hand; otherwise refuses.
        """
        known = self.ring.masters()
        record = known.get(current.kid)
        if record is not None and record.status == ACTIVE:
            return None
        for kid, now_record in sorted(known.items()):
            successor = self.keys.get(kid)
            if (
                successor is not None
                and now_record.status == ACTIVE
                and now_record.opens_with(successor)
            ):
                with self._guard:
                    self.current = successor
                    self.sealed_with = frozenset(k for k, r in known.items() if r.status == ACTIVE)
                return successor
        now = ", ".join(sorted(kid for kid, r in known.items() if r.status == ACTIVE))
        raise ConfigError(
            f"{key} was not written: this process seals with the master key "
            f"{current.kid}, which 'statekeeper encryption rotate' retired while it "
            f"ran (the store's key is now {now or 'none'}), and a version sealed under it "
            "could not be read with the store's key. Restart it with STATEKEEPER_MASTER_KEY "
            "(or STATEKEEPER_MASTER_KEY_FILE) set to the new key, or to 'new,old' "
            "(to rotate with no such refusals, start servers with 'old,new' first: "
            "docs/operations.md#key-rotation)"
        )

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
            have = ", ".join(self.keys) or "none"
            # Said by the server and the CLI alike: "configured", not "this server".
            raise ConfigError(
                f"{key} is encrypted under the master key {entry.kid}, which is not "
                f"configured (configured: {have}); set STATEKEEPER_MASTER_KEY (or "
                "STATEKEEPER_MASTER_KEY_FILE) to that key"
            )
        dek = master.unwrap(dek_id, entry.wrapped)
        self._remember(dek_id, dek)
        return dek

    def _remember(self, dek_id: str, dek: bytes) -> None:
        with self._guard:
            self._cache[dek_id] = dek
            while len(self._cache) > 256:
                self._cache.popitem(last=False)

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
            plain: bytes = aesgcm(self._data_key(dek_id, key)).decrypt(
                body[:NONCE], body[NONCE:], header
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
        sealed, meta = self._seal(key, data, metadata)
        return self._plain_info(self.inner.put(key, sealed, meta))

    def put_if_absent(self, key: str, data: bytes, metadata: Mapping[str, str]) -> bool:
        sealed, meta = self._seal(key, data, metadata)
        return self.inner.put_if_absent(key, sealed, meta)

    def replace(
        self, key: str, data: bytes, metadata: Mapping[str, str], expected: ObjectInfo | None
    ) -> ObjectInfo:
        # ``expected`` came from this wrapper: only its size differs from the
        # inner store's, and the inner store compares version IDs and ETags.
        sealed, meta = self._seal(key, data, metadata)
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

    def count_newer(self, key: str, version_id: str | None, up_to: int) -> int:
        return self.inner.count_newer(key, version_id, up_to)

    def with_previous(self, key: str, version_id: str, known: str | None = None) -> WithPrevious:
        got = self.inner.with_previous(key, version_id, known)
        before = got.previous_data
        return WithPrevious(
            self._open(key, got.data),
            got.previous,
            None if before is None else self._open(key, before),
        )

    def delete_version(self, key: str, version_id: str, current: str | None = None) -> None:
        self.inner.delete_version(key, version_id, current)

    def deleted(self, prefix: str = "") -> Iterator[DeletedState]:
        return self.inner.deleted(prefix)

    def undelete(self, key: str) -> ObjectInfo:
        return self._plain_info(self.inner.undelete(key))

    def purge(self, key: str, deleted: datetime | None = None) -> int:
        return self.inner.purge(key, deleted)

    def erase(self, key: str) -> None:
        self.inner.erase(key)

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
        """The master key new versions are sealed with; None when none is configured."""
        return self.store.current.kid if self.store.current is not None else None

    @property
    def store_kids(self) -> list[str]:
        """The master keys the store records as its own; empty when encryption is off."""
        return sorted(self.store.sealed_with)

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
