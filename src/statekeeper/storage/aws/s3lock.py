"""``s3lock://BUCKET[/PREFIX]``: S3-native lock files, as Terraform's ``use_lockfile``.

The lock on a state whose object is ``KEY`` is its lock file (``KEY`` +
``LOCK_FILE_SUFFIX``, see :mod:`statekeeper.terraform.layout`),
created with ``If-None-Match: *`` so that exactly one writer wins. Its body is
the compact LockInfo JSON with ``Path`` = ``BUCKET/KEY`` (as Terraform writes
it); the server's own facts travel as user metadata, which Terraform ignores.

``s3lock://`` with no bucket puts the lock files next to the states of an
``s3://`` store, with the same options.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any
from urllib.parse import quote, unquote

from statekeeper.errors import ConfigError, LockConflict, StatekeeperError, StorageError
from statekeeper.storage.aws import _boto
from statekeeper.storage.aws.s3 import S3Bucket, S3Store
from statekeeper.storage.base import LockTable, ObjectStore
from statekeeper.storage.registry import DriverURL
from statekeeper.terraform.layout import (
    is_lock_file,
    lock_file_key,
    lock_path,
    state_of_lock_file,
)
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.times import format_rfc3339, parse_rfc3339, utcnow

__all__ = ["S3LockFiles", "lock_of_file", "open_locks"]

# Answers that mean "this service does not do conditional deletes".
_NO_CONDITIONAL_DELETE = ("NotImplemented", "InvalidArgument", "InvalidRequest")


def lock_of_file(resp: dict[str, Any], where: str, *, damaged_ok: bool = False) -> LockInfo:
    """The lock in a lock file's GetObject answer (at ``where``), with the server's facts
    from its metadata (``acquired``: the lock's age by the server's clock); a damaged
    one is a StorageError, or with ``damaged_ok`` (listings, doctor) an unreadable lock
    that names what is wrong."""
    body = resp["Body"].read()
    try:
        lock = LockInfo.parse(body)
    except StatekeeperError as exc:
        damage = (
            f"the lock file {where} is not a Terraform lock ({exc.message}); once no "
            "Terraform run holds the state, remove it with 'statekeeper unlock NAME --force' "
            "or delete the file"
        )
        if damaged_ok:
            return LockInfo.unreadable(body, damage)
        raise StorageError(damage) from exc
    meta = {k.lower(): unquote(v) for k, v in (resp.get("Metadata") or {}).items()}
    acquired = None
    if meta.get("acquired"):
        try:
            acquired = parse_rfc3339(meta["acquired"])
        except ValueError:
            acquired = None
    return replace(
        lock, actor=meta.get("actor"), remote_addr=meta.get("remote-addr"), acquired=acquired
    )


class S3LockFiles(LockTable):
    scheme = "s3lock"

    def __init__(self, where: S3Bucket, store: ObjectStore) -> None:
        self.where = where
        self.store = store
        # Cleared the first time the service refuses DeleteObject with If-Match.
        self.conditional_delete = True
        # Fail at start-up, not at the first LOCK, when the bucket is missing.
        where.call(
            "s3:ListBucket", "", where.client.list_objects_v2, Prefix=where.key(""), MaxKeys=1
        )

    def lock_key(self, key: str) -> str:
        return lock_file_key(self.where.key(key))

    def _path(self, key: str) -> str:
        return lock_path(self.store.lock_namespace, self.store.full_key(key))

    def acquire(self, key: str, lock: LockInfo) -> None:
        lock_key = self.lock_key(key)
        body = lock.body_with_path(self._path(key))
        facts = {"acquired": format_rfc3339(lock.acquired or utcnow())}
        if lock.actor:
            facts["actor"] = quote(lock.actor, safe="")
        if lock.remote_addr:
            facts["remote-addr"] = quote(lock.remote_addr, safe="")
        for _ in range(5):
            try:
                self.where.client.put_object(
                    Bucket=self.where.bucket,
                    Key=lock_key,
                    Body=body,
                    IfNoneMatch="*",
                    ContentType="application/json",
                    Metadata=facts,
                    **self.where.sse_args(),
                )
                return
            except _boto.AWS_ERRORS as exc:
                # 412: held. 409: another conditional write is racing ours.
                if _boto.error_code(exc) not in (
                    "PreconditionFailed",
                    "ConditionalRequestConflict",
                ):
                    self.where.translate(exc, "s3:PutObject", lock_key)
            holder = self.read(key)
            if holder is not None:
                raise LockConflict(holder)
        raise StorageError(f"the lock file {self.where.uri(lock_key)} kept changing; try again")

    def _fetch(self, lock_key: str, *, damaged_ok: bool = False) -> tuple[LockInfo, str] | None:
        """The lock in ``lock_key`` and its ETag, or None when there is none.

        A lock file that is not a LockInfo is a StorageError, or with
        ``damaged_ok`` (listings) an unreadable lock that names what is wrong.
        """

        def missing(exc: Exception) -> None:
            if _boto.error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            self.where.translate(exc, "s3:GetObject", lock_key)

        resp = self.where.call(
            "s3:GetObject", lock_key, self.where.client.get_object, missing, Key=lock_key
        )
        if resp is None:
            return None
        lock = lock_of_file(resp, self.where.uri(lock_key), damaged_ok=damaged_ok)
        return lock, str(resp["ETag"])

    def read(self, key: str) -> LockInfo | None:
        found = self._fetch(self.lock_key(key))
        return None if found is None else found[0]

    def delete_if_held_by(self, key: str, lock_id: str) -> bool:
        lock_key = self.lock_key(key)
        found = self._fetch(lock_key)
        if found is None or found[0].id != lock_id:
            return False
        return self._delete_read(lock_key, found[1])

    def force_release(self, key: str) -> LockInfo | None:
        """Remove whatever lock file is there, a damaged one included (it has no ID)."""
        lock_key = self.lock_key(key)
        found = self._fetch(lock_key, damaged_ok=True)
        if found is None:
            return None
        if found[0].damaged is None:
            return super().force_release(key)
        return found[0] if self._delete_read(lock_key, found[1]) else self.force_release(key)

    def _delete_read(self, lock_key: str, etag: str) -> bool:
        """Delete the lock file if it is still the object read with ``etag``."""
        if not self.conditional_delete:
            self._delete(lock_key)
            return True
        try:
            # Only the object we read: a lock re-taken in between has another ETag.
            self.where.client.delete_object(Bucket=self.where.bucket, Key=lock_key, IfMatch=etag)
        except _boto.AWS_ERRORS as exc:
            code = _boto.error_code(exc)
            if code in ("PreconditionFailed", "NoSuchKey", "ConditionalRequestConflict"):
                return False
            if code in _NO_CONDITIONAL_DELETE or _boto.status_code(exc) == 501:
                # Older S3-compatible services: fall back to what Terraform does.
                self.conditional_delete = False
                self._delete(lock_key)
                return True
            self.where.translate(exc, "s3:DeleteObject", lock_key)
        return True

    def probe(self) -> None:
        """HeadBucket on the bucket of the lock files."""
        self.where.probe()

    def _delete(self, lock_key: str) -> None:
        self.where.call("s3:DeleteObject", lock_key, self.where.client.delete_object, Key=lock_key)

    def scan(self, prefix: str = "") -> Iterator[tuple[str, LockInfo]]:
        listing = self.where.key(prefix)
        keys: list[str] = []
        paginator = self.where.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.where.bucket, Prefix=listing):
                keys += [o["Key"] for o in page.get("Contents", []) if is_lock_file(o["Key"])]
        except _boto.AWS_ERRORS as exc:
            self.where.translate(exc, "s3:ListBucket", listing)
        with ThreadPoolExecutor(8, thread_name_prefix="statekeeper-s3lock") as pool:
            held = list(pool.map(lambda k: self._fetch(k, damaged_ok=True), keys))
        found = [
            (state_of_lock_file(self.where.name(lock_key)), lock[0])
            for lock_key, lock in zip(keys, held, strict=True)
            if lock is not None  # released since the listing
        ]
        yield from sorted(found, key=lambda kv: kv[0])


def open_locks(url: DriverURL, store: ObjectStore, *, create: bool = True) -> S3LockFiles:
    # ``create``: a bucket is never made by opening it (a missing one fails at first use).
    if not url.netloc:
        states = store.records.objects  # the S3 store itself, also behind encryption
        if not isinstance(states, S3Store):
            raise ConfigError(
                f"{url.raw!r} names no bucket; use s3lock://BUCKET[/PREFIX] (a bare "
                "s3lock:// means 'next to the states' and needs an s3:// store)"
            )
        url.reject_unknown_options(set())
        return S3LockFiles(states.where.reconnect(), store)
    return S3LockFiles(S3Bucket.from_url(url), store)
