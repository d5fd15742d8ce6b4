"""Editing a versioned bucket's history: single versions, delete markers, the trash.

On S3 a deleted state is its delete marker: the versions stay behind it, so
the trash is the set of keys whose latest entry is a delete marker, a restore
removes the markers above the newest version (the object is current again,
byte for byte), and a purge deletes every version and marker of the key.
Removing a version is ``DeleteObject`` with its ``VersionId``, which needs
``s3:DeleteObjectVersion``; it is permanent, so the current version is never
removed this way.

S3 answers such a removal alike whether the version was there or not, so two
replicas pruning (or compacting) one state at once both removed a version and both
counted it. A removal is therefore claimed first: a conditional write of a claim
object (``If-None-Match``, under ``statekeeper!/removing/``) that one replica wins;
the other finds the version being removed (VersionNotFound, as when it is gone).
The claim is removed with the version; one left by a replica that died meanwhile
is taken over once its time is out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from statekeeper.errors import StateNotFound, StorageError, VersionNotFound
from statekeeper.storage.aws import _boto
from statekeeper.storage.aws._boto import S3Bucket
from statekeeper.storage.base import DeletedState, deleted_again, written_since
from statekeeper.terraform.layout import STATEKEEPER_PREFIX, is_lock_file
from statekeeper.times import format_rfc3339, parse_rfc3339, utcnow

__all__ = [
    "CLAIMS_PREFIX",
    "Entry",
    "delete_version",
    "deleted",
    "entries",
    "erase",
    "purge",
    "undelete",
]


@dataclass(frozen=True)
class Entry:
    """One line of ``ListObjectVersions``: a version or a delete marker, newest first."""

    key: str
    version_id: str
    is_latest: bool
    last_modified: datetime
    marker: bool
    size: int = 0


def entries(where: S3Bucket, prefix: str) -> Iterator[Entry]:
    """Every version and delete marker under the full key ``prefix``, newest first per key."""
    paginator = where.client.get_paginator("list_object_versions")
    try:
        for page in paginator.paginate(Bucket=where.bucket, Prefix=prefix):
            found: list[Entry] = [
                Entry(v["Key"], v["VersionId"], v["IsLatest"], v["LastModified"], False, v["Size"])
                for v in page.get("Versions", [])
            ]
            found += [
                Entry(m["Key"], m["VersionId"], m["IsLatest"], m["LastModified"], True)
                for m in page.get("DeleteMarkers", [])
            ]
            yield from sorted(found, key=_newest_first)
    except _boto.AWS_ERRORS as exc:
        where.translate(exc, "s3:ListBucketVersions", prefix)


def _newest_first(e: Entry) -> tuple[str, bool, float]:
    # The listing gives versions and markers apart; the latest is flagged, the rest by time.
    return (e.key, not e.is_latest, -e.last_modified.timestamp())


def _of_key(where: S3Bucket, full: str) -> list[Entry]:
    return sorted((e for e in entries(where, full) if e.key == full), key=_newest_first)


def _remove(where: S3Bucket, full: str, version_id: str) -> None:
    where.call(
        "s3:DeleteObjectVersion",
        full,
        where.client.delete_object,
        Key=full,
        VersionId=version_id,
    )


#: Where a replica claims the removal of a version before it removes it.
CLAIMS_PREFIX = STATEKEEPER_PREFIX + "removing/"
#: How long a claim holds: a removal is a listing and a delete, done in seconds; a
#: claim older than this was left by a replica that stopped half-way.
CLAIM_FOR = timedelta(minutes=5)


@contextmanager
def _claimed(where: S3Bucket, full: str, version_id: str) -> Iterator[None]:
    """Hold the claim on removing ``version_id`` of ``full``; VersionNotFound when
    another process holds it."""
    claim = where.key(f"{CLAIMS_PREFIX}{where.name(full)}@{version_id}")
    for _ in range(3):
        try:
            put = where.client.put_object(
                Bucket=where.bucket,
                Key=claim,
                Body=format_rfc3339(utcnow() + CLAIM_FOR).encode(),
                IfNoneMatch="*",
                **where.sse_args(),
            )
            break
        except _boto.AWS_ERRORS as exc:
            # 412: claimed. 409: another conditional write of it is racing ours.
            if _boto.error_code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
                where.translate(exc, "s3:PutObject", claim)
        if not _forget_stale(where, claim):
            raise VersionNotFound(
                f"version {version_id!r} of {where.name(full)!r} is being removed by "
                "another process"
            )
    else:
        raise StorageError(f"the claim {where.uri(claim)} kept changing; try again")
    try:
        yield
    finally:
        # By its version ID: removed for good, no delete marker left behind.
        where.call(
            "s3:DeleteObjectVersion",
            claim,
            where.client.delete_object,
            Key=claim,
            VersionId=put.get("VersionId", "null"),
        )


def _forget_stale(where: S3Bucket, claim: str) -> bool:
    """Remove ``claim`` if its time is out (or it is gone already); whether it is."""

    def missing(exc: Exception) -> None:
        if _boto.error_code(exc) not in ("NoSuchKey", "404", "NotFound"):
            where.translate(exc, "s3:GetObject", claim)

    held = where.call("s3:GetObject", claim, where.client.get_object, missing, Key=claim)
    if held is None:
        return True  # released since our write was refused
    try:
        expires = parse_rfc3339(held["Body"].read().decode())
    except (UnicodeDecodeError, ValueError):
        expires = held["LastModified"] + CLAIM_FOR  # not ours to read: by its age
    if expires > utcnow():
        return False
    _remove(where, claim, held.get("VersionId", "null"))
    return True


def delete_version(where: S3Bucket, full: str, version_id: str, current: str | None) -> None:
    with _claimed(where, full, version_id):
        _delete_version(where, full, version_id, current)


def _delete_version(where: S3Bucket, full: str, version_id: str, current: str | None) -> None:
    in_order = _of_key(where, full)
    # S3 has no transaction: the latest entry is checked just before the removal, which
    # narrows a concurrent write's window to the one DeleteObject call.
    if current is not None and (
        not in_order or in_order[0].marker or in_order[0].version_id != current
    ):
        raise written_since(where.name(full), version_id, current)
    listed = {e.version_id: e for e in in_order}
    entry = listed.get(version_id)
    if entry is None or entry.marker:
        raise VersionNotFound(f"state {where.name(full)!r} has no version {version_id!r}")
    if entry.is_latest:
        raise StorageError(
            f"version {version_id} of {where.name(full)!r} is its current state; "
            "it is never removed on its own"
        )
    _remove(where, full, version_id)


def _trashed(where: S3Bucket, full: str) -> tuple[list[Entry], list[Entry]]:
    """The delete markers above the newest version, and every entry (StateNotFound: not deleted)."""
    listed = _of_key(where, full)
    if not listed or not listed[0].marker or not any(not e.marker for e in listed):
        raise StateNotFound(f"{where.name(full)!r} is not in the trash ('statekeeper trash list')")
    above: list[Entry] = []
    for entry in listed:
        if not entry.marker:
            break
        above.append(entry)
    return above, listed


def deleted(where: S3Bucket, prefix: str) -> Iterator[DeletedState]:
    by_key: dict[str, list[Entry]] = {}
    for entry in entries(where, prefix):
        if not is_lock_file(entry.key):
            by_key.setdefault(entry.key, []).append(entry)
    for full, listed in sorted(by_key.items()):
        listed.sort(key=_newest_first)
        if not listed[0].marker:
            continue
        newest = next((e for e in listed if not e.marker and e.size > 0), None)
        if newest is not None:
            yield DeletedState(
                where.name(full), listed[0].last_modified, newest.version_id, newest.size
            )


def undelete(where: S3Bucket, full: str) -> None:
    above, _ = _trashed(where, full)
    for marker in above:
        _remove(where, full, marker.version_id)


def purge(where: S3Bucket, full: str, deleted: datetime | None) -> int:
    _, listed = _trashed(where, full)
    # The newest delete marker is the deletion; entries written after this listing
    # (a new version, a new marker) are not in it and stay.
    if deleted is not None and listed[0].last_modified > deleted:
        raise deleted_again(where.name(full), deleted)
    # Oldest first, the delete marker last: removed first, the marker would leave the
    # newest version current, the state readable and writable again until its removal.
    for entry in reversed(listed):
        _remove(where, full, entry.version_id)
    return sum(1 for e in listed if not e.marker)


def erase(where: S3Bucket, full: str) -> None:
    """Remove every version and delete marker of ``full``: a record gone for good.

    Each is removed by its ID, so no delete marker is added; a version written after
    the listing is a new record and stays. Oldest first, the current one last: removed
    newest first, each older version would be current in turn until its own removal,
    readable and writable again (an outbox entry erased after its delivery would show
    its unclaimed version, and another replica would claim and send it once more).
    """
    for entry in reversed(_of_key(where, full)):
        _remove(where, full, entry.version_id)
