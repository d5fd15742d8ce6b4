"""Master keys: what wraps the data keys of encryption at rest.

A master key is a local 32-byte key (``STATEKEEPER_MASTER_KEY`` / ``_FILE``,
base64) or an AWS KMS key (``awskms://KEY-ID-OR-ALIAS-OR-ARN``). Its id
(``local:<16 hex of sha256>`` or ``awskms:<key>``) names it in the key ring
(:mod:`statekeeper.storage.keyring`), so entries wrapped by an old and a new
master key can coexist during a rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from typing import Any, Protocol

from statekeeper.errors import ConfigError, MissingDependency

__all__ = [
    "NONCE",
    "KmsMasterKey",
    "LocalMasterKey",
    "MasterKey",
    "aesgcm",
    "parse_master_key",
    "parse_master_keys",
    "remote_master_key",
]

#: Bytes of an AES-GCM nonce, here and in the sealed versions.
NONCE = 12
#: How a master key setting names a KMS key.
KMS_SCHEME = "awskms://"


def aesgcm(key: bytes) -> Any:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


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
        self._aead = aesgcm(key)
        self.kid = "local:" + hashlib.sha256(b"statekeeper-kid" + key).hexdigest()[:16]

    def wrap(self, dek_id: str, dek: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        sealed: bytes = self._aead.encrypt(nonce, dek, dek_id.encode())
        return nonce + sealed

    def unwrap(self, dek_id: str, wrapped: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            dek: bytes = self._aead.decrypt(wrapped[:NONCE], wrapped[NONCE:], dek_id.encode())
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
    if text.startswith(KMS_SCHEME):
        key_id = text.removeprefix(KMS_SCHEME)
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


def remote_master_key(text: str | None) -> bool:
    """True when the master key setting ``text`` names a KMS key (called over the network)."""
    return any(part.strip().startswith(KMS_SCHEME) for part in (text or "").split(","))


def parse_master_keys(text: str) -> list[MasterKey]:
    """Comma-separated keys: the first wraps new data keys, all of them unwrap.

    A later key wraps new data keys once a rotation makes it the store's key
    (``old,new``: no restart between the rotation and the first write under ``new``).
    """
    keys = [parse_master_key(part) for part in text.split(",") if part.strip()]
    if not keys:
        raise ConfigError("the master key setting is empty")
    return keys
