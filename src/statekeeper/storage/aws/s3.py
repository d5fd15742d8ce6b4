"""``s3://BUCKET[/PREFIX]``: states as S3 objects, in Terraform's ``backend "s3"`` layout.

A state named ``team/app.tfstate`` is the object ``PREFIX/team/app.tfstate``,
exactly where Terraform's S3 backend with ``key = "PREFIX/team/app.tfstate"``
keeps it, so both can share one bucket. History is the bucket's own versioning;
each version carries its statekeeper facts (serial, lineage, sha256, lock ID,
actor) as S3 user metadata, so a history listing needs no downloads.

Options: ``region``, ``profile``, ``path_style=true|false``,
``sse=AES256|aws:kms`` and ``kms_key_id`` (which implies ``aws:kms``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from statekeeper.errors import CapabilityMissing, StorageError, VersionNotFound, WriteRace
from statekeeper.storage.aws import _boto, s3history
from statekeeper.storage.aws._boto import S3Bucket
from statekeeper.storage.aws.s3parts import PART_SIZE, md5_b64, put_in_parts, read_rest
from statekeeper.storage.base import DeletedState, ObjectInfo, ObjectStore, StoredObject
from statekeeper.storage.registry import DriverURL
from statekeeper.terraform.layout import is_lock_file
from statekeeper.times import utcnow

__all__ = ["S3Bucket", "S3Store", "open_store"]

#: Concurrent part transfers and version HEADs per call.
_WORKERS = 8


def _read_action(version_id: str | None) -> str:
    """The IAM action a read needs: reading an older version is a permission of its own."""
    return "s3:GetObject" if version_id is None else "s3:GetObjectVersion"


def _total_size(resp: dict[str, Any]) -> int:
    """The object's size from a ranged answer (``bytes 0-9/10``) or a whole one."""
    content_range = resp.get("ContentRange")
    if content_range and "/" in content_range:
        return int(content_range.rsplit("/", 1)[1])
    return int(resp["ContentLength"])


class S3Store(ObjectStore):
    scheme = "s3"
    supports_conditional_put = True
    supports_compare_and_swap = True
    costly_listing = True

    def __init__(self, where: S3Bucket) -> None:
        self.where = where
        #: "Enabled", "Suspended", "Disabled" or "unknown" (not allowed to ask).
        self.versioning_status = self._versioning_status()
        self.supports_versions = self.versioning_status == "Enabled"
        self.supports_history_edits = self.supports_versions
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="statekeeper-s3")

    def _versioning_status(self) -> str:
        def denied(exc: Exception) -> str:
            # Terraform's minimal policy does not grant it; the store still works.
            if _boto.denied(exc):
                return "unknown"
            self.where.translate(exc, "s3:GetBucketVersioning")

        resp = self.where.call(
            "s3:GetBucketVersioning", "", self.where.client.get_bucket_versioning, denied
        )
        if isinstance(resp, str):
            return resp
        return str(resp.get("Status") or "Disabled")

    @property
    def history_warning(self) -> str | None:
        """Why this store keeps no history, and what to do; None when it does."""
        if self.supports_versions:
            return None
        bucket = self.where.bucket
        if self.versioning_status == "unknown":
            why = "the credentials may not read its versioning (s3:GetBucketVersioning)"
        else:
            why = f"bucket versioning is {self.versioning_status}"
        return (
            f"the bucket {bucket!r} keeps no state history ({why}): every write replaces "
            "the previous state for good. Enable versioning: aws s3api put-bucket-versioning "
            f"--bucket {bucket} --versioning-configuration Status=Enabled"
        )

    @property
    def lock_namespace(self) -> str:
        return self.where.bucket

    def full_key(self, key: str) -> str:
        return self.where.key(key)

    # Writes

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        return self._write(key, data, metadata, {})

    def replace(
        self, key: str, data: bytes, metadata: Mapping[str, str], expected: ObjectInfo | None
    ) -> ObjectInfo:
        # S3 conditional writes: If-None-Match for a first write, If-Match on the
        # ETag of the version the write was checked against otherwise.
        if expected is None:
            # A zero-length object reads as "no state" (as in Terraform) but
            # still exists for If-None-Match: replace it by its ETag instead.
            empty = self._zero_length_etag(key)
            condition = {"IfMatch": empty} if empty else {"IfNoneMatch": "*"}
        elif expected.etag:
            condition = {"IfMatch": expected.etag}
        else:
            return self.put(key, data, metadata)
        return self._write(key, data, metadata, condition)

    def _zero_length_etag(self, key: str) -> str | None:
        full = self.where.key(key)
        resp = self.where.call(
            "s3:GetObject",
            full,
            self.where.client.head_object,
            self._not_found(full, None),
            Key=full,
        )
        if resp is None or int(resp["ContentLength"]) != 0:
            return None
        etag: str = resp["ETag"]
        return etag

    def _write(
        self, key: str, data: bytes, metadata: Mapping[str, str], condition: dict[str, str]
    ) -> ObjectInfo:
        full = self.where.key(key)

        def raced(exc: Exception) -> Any:
            if condition and _boto.error_code(exc) in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
                "NoSuchKey",
            ):
                raise WriteRace(
                    f"another write to {self.where.uri(full)} landed while this one was "
                    "being checked; nothing was written: read the state again and retry"
                ) from exc
            self.where.translate(exc, "s3:PutObject", full)

        if len(data) > PART_SIZE:
            resp = put_in_parts(self.where, self._pool, full, data, metadata, condition, raced)
        else:
            resp = self.where.call(
                "s3:PutObject",
                full,
                self.where.client.put_object,
                raced,
                Key=full,
                Body=data,
                ContentMD5=md5_b64(data),
                ContentType="application/json",
                Metadata=dict(metadata),
                **condition,
                **self.where.sse_args(),
            )
        return ObjectInfo(
            key=key,
            version_id=resp.get("VersionId") or "null",
            size=len(data),
            last_modified=utcnow(),
            metadata=dict(metadata),
            etag=resp.get("ETag"),
        )

    def put_if_absent(self, key: str, data: bytes, metadata: Mapping[str, str]) -> bool:
        full = self.where.key(key)

        try:
            self.where.client.put_object(
                Bucket=self.where.bucket,
                Key=full,
                Body=data,
                IfNoneMatch="*",
                ContentMD5=md5_b64(data),
                ContentType="application/json",
                Metadata=dict(metadata),
                **self.where.sse_args(),
            )
        except _boto.AWS_ERRORS as exc:
            # 412: the key exists; 409: another conditional write to it is in flight.
            if _boto.error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            self.where.translate(exc, "s3:PutObject", full)
        return True

    def delete(self, key: str) -> None:
        full = self.where.key(key)
        self.where.call("s3:DeleteObject", full, self.where.client.delete_object, Key=full)

    # Reads

    def _not_found(self, full: str, version_id: str | None) -> Callable[[Exception], None]:
        def handle(exc: Exception) -> None:
            code, status = _boto.error_code(exc), _boto.status_code(exc)
            if (
                version_id is not None
                and (
                    code in ("NoSuchVersion", "InvalidArgument", "MethodNotAllowed")
                    or status in (400, 404, 405)
                )
                and code != "NoSuchBucket"
            ):
                raise VersionNotFound(
                    f"state {self.where.name(full)!r} has no version {version_id!r}"
                ) from exc
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            if code == "InvalidRange":
                return None  # a zero-length object: no state
            self.where.translate(exc, _read_action(version_id), full)

        return handle

    def _info(self, key: str, resp: dict[str, Any], size: int) -> ObjectInfo:
        modified: datetime = resp.get("LastModified") or utcnow()
        return ObjectInfo(
            key=key,
            version_id=resp.get("VersionId") or "null",
            size=size,
            last_modified=modified,
            metadata=dict(resp.get("Metadata") or {}),
            etag=resp.get("ETag"),
        )

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        full = self.where.key(key)
        extra = {"VersionId": version_id} if version_id is not None else {}
        resp = self.where.call(
            _read_action(version_id),
            full,
            self.where.client.head_object,
            self._not_found(full, version_id),
            Key=full,
            **extra,
        )
        if resp is None or int(resp["ContentLength"]) == 0:
            return None  # Terraform reads a zero-length object as no state
        info = self._info(key, resp, int(resp["ContentLength"]))
        if version_id is not None:
            info = self._mark_latest(key, info)
        return info

    def _mark_latest(self, key: str, info: ObjectInfo) -> ObjectInfo:
        current = self.head(key)
        latest = current is not None and current.version_id == info.version_id
        return ObjectInfo(
            info.key, info.version_id, info.size, info.last_modified, info.metadata, latest
        )

    def get(self, key: str, version_id: str | None = None) -> StoredObject | None:
        full = self.where.key(key)
        pin = {"VersionId": version_id} if version_id is not None else {}
        for _ in range(3):
            first = self.where.call(
                _read_action(version_id),
                full,
                self.where.client.get_object,
                self._not_found(full, version_id),
                Key=full,
                Range=f"bytes=0-{PART_SIZE - 1}",
                **pin,
            )
            if first is None:
                return None
            total = _total_size(first)
            if total == 0:
                first["Body"].close()
                return None
            data = read_rest(self.where, self._pool, full, first, total, pin)
            if data is None:
                continue  # replaced while we read its ranges: read the new one
            info = self._info(key, first, total)
            if version_id is not None:
                info = self._mark_latest(key, info)
            return StoredObject(info, data)
        raise StorageError(f"{self.where.uri(full)} kept changing while it was read; try again")

    def scan(self, prefix: str = "") -> Iterator[ObjectInfo]:
        listing = self.where.key(prefix)
        paginator = self.where.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.where.bucket, Prefix=listing):
                for obj in page.get("Contents", []):
                    key: str = obj["Key"]
                    if is_lock_file(key) or int(obj["Size"]) == 0:
                        continue  # lock files and zero-length objects are not states
                    yield ObjectInfo(
                        key=self.where.name(key),
                        version_id="",
                        size=int(obj["Size"]),
                        last_modified=obj["LastModified"],
                        has_metadata=False,
                        etag=obj.get("ETag"),
                    )
        except _boto.AWS_ERRORS as exc:
            self.where.translate(exc, "s3:ListBucket", listing)

    def versions(self, key: str) -> list[ObjectInfo]:
        if not self.supports_versions:
            raise CapabilityMissing(
                f"no history of {key!r}: " + (self.history_warning or "versioning is off")
            )
        full = self.where.key(key)
        found: list[dict[str, Any]] = []
        paginator = self.where.client.get_paginator("list_object_versions")
        try:
            for page in paginator.paginate(Bucket=self.where.bucket, Prefix=full):
                # Delete markers come in their own list and are left out.
                found += [
                    v for v in page.get("Versions", []) if v["Key"] == full and int(v["Size"]) > 0
                ]
        except _boto.AWS_ERRORS as exc:
            self.where.translate(exc, "s3:ListBucketVersions", full)

        def with_metadata(v: dict[str, Any]) -> ObjectInfo:
            info = self._head_version(key, v)
            if info is None:  # removed since the listing; keep what the listing says
                return ObjectInfo(
                    key, v["VersionId"], int(v["Size"]), v["LastModified"], {}, v["IsLatest"], False
                )
            return info

        return list(self._pool.map(with_metadata, found))

    def _head_version(self, key: str, listed: dict[str, Any]) -> ObjectInfo | None:
        full = self.where.key(key)
        resp = self.where.call(
            "s3:GetObjectVersion",
            full,
            self.where.client.head_object,
            self._not_found(full, None),
            Key=full,
            VersionId=listed["VersionId"],
        )
        if resp is None:
            return None
        return ObjectInfo(
            key=key,
            version_id=listed["VersionId"],
            size=int(listed["Size"]),
            last_modified=listed["LastModified"],
            metadata=dict(resp.get("Metadata") or {}),
            is_latest=bool(listed["IsLatest"]),
        )

    # History edits: the bucket's versions and delete markers (s3history.py).

    def delete_version(self, key: str, version_id: str, current: str | None = None) -> None:
        s3history.delete_version(self.where, self.where.key(key), version_id, current)

    def deleted(self, prefix: str = "") -> Iterator[DeletedState]:
        return s3history.deleted(self.where, self.where.key(prefix))

    def undelete(self, key: str) -> ObjectInfo:
        s3history.undelete(self.where, self.where.key(key))
        info = self.head(key)
        if info is None:
            raise StorageError(f"{key!r} was restored but cannot be read back; try again")
        return info

    def purge(self, key: str, deleted: datetime | None = None) -> int:
        return s3history.purge(self.where, self.where.key(key), deleted)

    def erase(self, key: str) -> None:
        if self.versioning_status in ("Disabled", "unknown"):
            # Nothing to remove but the object (or not allowed to list its versions).
            self.delete(key)
        else:
            s3history.erase(self.where, self.where.key(key))

    def probe(self) -> None:
        """HeadBucket: the bucket exists and these credentials reach it."""
        self.where.probe()

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def open_store(url: DriverURL, *, create: bool = True) -> S3Store:
    # ``create`` is for drivers that make their file on opening: a bucket is never
    # made by opening it (a missing one fails at the first call).
    return S3Store(S3Bucket.from_url(url))
