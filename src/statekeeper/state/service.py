"""Writing state: the rules of ``docs/protocol.md#rules``, in one place.

The reads are :class:`~statekeeper.state.reads.StateReads`, which the service
extends. A write is accepted only if it carries the holder's lock ID (when the state is
locked), its Content-MD5 matches, it parses as a Terraform state or an OpenTofu
encrypted envelope, and it passes the serial/lineage guard. The bytes are then
stored verbatim as a new version, and the digest Terraform's S3 backend checks
is brought up to date. Each read, write and delete, accepted or refused, is one
event on the stream (``read``, ``write`` or ``push`` for a forced write,
``delete``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import NoReturn

from statekeeper.errors import (
    ChecksumMismatch,
    InvalidState,
    StateConflict,
    StatekeeperError,
    StateNotFound,
    WriteRace,
)
from statekeeper.events import Action, Draft, EventStream
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, Policy, require
from statekeeper.state import lineage
from statekeeper.state.intake import intake
from statekeeper.state.lockkeeper import taken_by_another
from statekeeper.state.locks import LockService
from statekeeper.state.reads import StateReads
from statekeeper.state.version import Provenance, StateVersion, version_from_info
from statekeeper.storage.base import ObjectInfo, ObjectStore, StoredObject, Upload
from statekeeper.terraform.names import StateName
from statekeeper.terraform.statedoc import StateDoc
from statekeeper.times import utcnow

__all__ = ["StateService", "WriteOutcome", "check_content_md5"]


@dataclass(frozen=True)
class WriteOutcome:
    version: StateVersion
    #: False when the bytes were already current (an idempotent retry).
    created: bool


@dataclass(frozen=True)
class _Stamp:
    serial: int
    lineage: str


class _Stale(Exception):
    """The remembered current version was not the store's: check against the store."""


def _facts(info: ObjectInfo) -> tuple[ObjectInfo, str, _Stamp]:
    """A remembered version's facts (KnownVersions keeps only versions that have them)."""
    fields = StateVersion.metadata_fields(dict(info.metadata))
    return info, fields["sha256"], _Stamp(fields["serial"], fields["lineage"])


def decode_content_md5(header: str) -> bytes:
    try:
        digest = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ChecksumMismatch(
            f"the Content-MD5 header {header!r} is not base64; send base64(md5(body))"
        ) from exc
    if len(digest) != 16:
        raise ChecksumMismatch(
            f"the Content-MD5 header {header!r} is not an MD5 digest; send base64(md5(body))"
        )
    return digest


def check_content_md5(header: str | None, data: bytes) -> None:
    """Refuse ``data`` when a ``Content-MD5`` header came with it and does not match."""
    if header is not None and decode_content_md5(header) != hashlib.md5(data).digest():
        raise _mismatch()


def _mismatch() -> ChecksumMismatch:
    return ChecksumMismatch(
        "the Content-MD5 header does not match the body (the upload was damaged "
        "or altered); nothing was written"
    )


class StateService(StateReads):
    """:class:`StateReads`, and the writes: every rule a new version passes."""

    def __init__(
        self, store: ObjectStore, locks: LockService, policy: Policy, events: EventStream
    ) -> None:
        super().__init__(store, policy, events)
        self.locks = locks

    def authorize(
        self, name: StateName, caller: Caller, needed: Permission, action: Action, what: str
    ) -> None:
        """Refuse ``action`` before its request body is read, when ``needed`` is missing.

        A refusal is the operation's one event (the operation never runs); a
        success records nothing, the operation it precedes records itself.
        """
        if self.policy.allows(caller, name, needed):
            return  # no event to open: nothing would be recorded (on the event loop, per request)
        with self.events.event(action, caller, name, record_success=False):
            require(self.policy, caller, name, needed, what)

    def refuse(
        self, name: StateName, caller: Caller, action: Action, error: StatekeeperError
    ) -> NoReturn:
        """Record ``error``, found in a request before its operation could run (a body
        over its limit or not matching its Content-MD5), as the operation's one event,
        and raise it: a refusal is traceable however early it comes."""
        with self.events.event(action, caller, name, record_success=False):
            raise error

    def _current(self, key: str) -> tuple[ObjectInfo, str, _Stamp | None] | None:
        """The current version's facts and SHA-256, from its metadata when it has them.

        Only a state written without statekeeper's metadata (by Terraform's own
        S3 backend) is read in full: loading and hashing a large current state on
        every write would double the memory and time of the write.
        """
        info = self.store.head(key)
        if info is None:
            return None
        fields = StateVersion.metadata_fields(dict(info.metadata))
        if {"sha256", "serial", "lineage"} <= fields.keys():
            return info, fields["sha256"], _Stamp(fields["serial"], fields["lineage"])
        obj = self.store.get(key)
        if obj is None:
            return None
        return obj.info, hashlib.sha256(obj.data).hexdigest(), self._current_stamp(obj)

    def _current_stamp(self, current: StoredObject) -> _Stamp | None:
        fields = StateVersion.metadata_fields(dict(current.info.metadata))
        if "serial" in fields and "lineage" in fields:
            return _Stamp(fields["serial"], fields["lineage"])
        try:
            doc = StateDoc.parse(current.data, keep_document=False)
        except Exception:  # noqa: BLE001 - a foreign or damaged object: nothing to guard
            return None
        return _Stamp(doc.serial, doc.lineage)

    def write(
        self,
        name: StateName,
        data: bytes | Iterable[bytes],
        caller: Caller,
        *,
        lock_id: str | None = None,
        content_md5: str | None = None,
        force: bool = False,
        provenance: Provenance | None = None,
        restored_from: str | None = None,
    ) -> WriteOutcome:
        """Store ``data`` as the new current state of ``name``, if the rules allow.

        ``data`` is the bytes, or the request body's chunks as they arrive: they
        are hashed, validated and handed to the store's upload in one pass, and
        stored as the new version only once all of them passed the rules.
        ``provenance`` (a migration) records the source's writer and time as the
        version's, and ``caller`` as the one who copied it; ``restored_from`` (a
        rollback) names the version whose content this is.
        """
        with self.events.event(Action.PUSH if force else Action.WRITE, caller, name) as event:
            event.lock_id = lock_id
            outcome = self._write(
                name,
                data,
                caller,
                event,
                lock_id=lock_id,
                content_md5=content_md5,
                force=force,
                provenance=provenance,
                restored_from=restored_from,
            )
            event.version = outcome.version.version_id
            event.serial = outcome.version.serial
            if not outcome.created:
                event.detail = "unchanged (the bytes were already current)"
            return outcome

    def _write(
        self,
        name: StateName,
        data: bytes | Iterable[bytes],
        caller: Caller,
        event: Draft,
        *,
        lock_id: str | None,
        content_md5: str | None,
        force: bool,
        provenance: Provenance | None,
        restored_from: str | None = None,
    ) -> WriteOutcome:
        require(
            self.policy,
            caller,
            name,
            Permission.ADMIN if force else Permission.WRITE,
            "force a write to" if force else "write",
        )
        key = str(name)
        chunks: Iterable[bytes] = (data,) if isinstance(data, bytes) else data
        with self.store.upload(key) as upload:
            md5, sha256, doc = intake(chunks, upload)
            if content_md5 is not None and decode_content_md5(content_md5) != md5.digest():
                raise _mismatch()
            if isinstance(doc, InvalidState):
                raise doc
            # Serialized: the fence and the guard read, then the store writes.
            with self.locks.serialized(name):
                holder = self.locks.fence(name, lock_id, caller)
                if holder is not None:
                    # The fence read the holder: the event names the lock it was written under.
                    event.lock(holder)
                    if taken_by_another(holder, caller):
                        event.detail = (
                            f"written under the lock {holder.actor} took (an admin's override)"
                        )
                record = StateVersion(
                    name=key,
                    version_id="",
                    size=upload.size,
                    created=(provenance and provenance.created) or utcnow(),
                    md5=md5.hexdigest(),
                    sha256=sha256.hexdigest(),
                    serial=doc.serial,
                    lineage=doc.lineage,
                    lock_id=lock_id,
                    actor=provenance.actor if provenance else caller.actor,
                    migrated_by=caller.actor if provenance else None,
                    restored_from=restored_from,
                )
                # Only a conditional put makes the remembered version safe to check against.
                known = self._known.get(key) if self.store.supports_compare_and_swap else None
                if known is not None:
                    try:
                        return self._checked_put(
                            upload, doc, record, _facts(known), force, event, fresh=False
                        )
                    except _Stale:
                        self._known.forget(key)
                current = self._current(key)
                return self._checked_put(upload, doc, record, current, force, event, fresh=True)

    def check_write(self, name: StateName, data: bytes, *, force: bool = False) -> None:
        """Raise the StateConflict a write of ``data`` would meet from the serial/lineage
        guard against the current version now; nothing is written (a dry run)."""
        current = self._current(str(name))
        if current is None or force:
            return
        _, current_sha256, stamp = current
        if stamp is None:
            return
        doc = StateDoc.parse(data, keep_document=False)
        same = current_sha256 == hashlib.sha256(data).hexdigest()
        verdict = lineage.compare(stamp, doc, same_bytes=same)
        if not verdict.accepted:
            raise StateConflict(lineage.explain(verdict, stamp, doc))

    def _checked_put(
        self,
        upload: Upload,
        doc: StateDoc,
        record: StateVersion,
        current: tuple[ObjectInfo, str, _Stamp | None] | None,
        force: bool,
        event: Draft,
        *,
        fresh: bool,
    ) -> WriteOutcome:
        """The serial/lineage guard against ``current``, then the put over it.

        ``fresh=False``: ``current`` is the version remembered from this process's
        last read or write. Anything but a clean put over it (a refusal, the same
        bytes, a version changed meanwhile) raises _Stale, and the write is
        checked again against the store's current version.
        """
        key = upload.key
        md5_hex = str(record.md5)  # set, like sha256, by the write that built the record
        if current is not None:
            info, current_sha256, stamp = current
            same = current_sha256 == record.sha256
            verdict = lineage.compare(stamp, doc, same_bytes=same) if stamp else None
            if same or verdict is lineage.Verdict.IDENTICAL:
                if not fresh:
                    raise _Stale
                self._keep_digest(key, md5_hex, changed=False)
                return WriteOutcome(_version(key, info, record), False)
            if verdict is not None and not verdict.accepted and not force:
                if not fresh:
                    raise _Stale
                assert stamp is not None  # a verdict implies a stamp
                raise StateConflict(lineage.explain(verdict, stamp, doc))

        written: list[StateVersion] = []  # the version as its transaction stored it

        def stored(info: ObjectInfo) -> None:
            # In the version's own transaction where the store has one (SQLite): the
            # digest and the write's audit record commit with the version, one commit
            # and one fsync for the whole write instead of three commits and two.
            self._keep_digest(key, md5_hex, changed=True)
            written[:] = [_version(key, info, record)]
            event.version, event.serial = written[0].version_id, written[0].serial
            event.record_in_commit()

        try:
            info = self._store(upload, record, current[0] if current else None, stored)
        except WriteRace:
            if not fresh:
                raise _Stale from None
            raise
        self._known.remember(key, info)
        (version,) = written  # ``stored`` was told of ``info``, the last thing a put does
        return WriteOutcome(version, True)

    def _store(
        self,
        upload: Upload,
        record: StateVersion,
        checked: ObjectInfo | None,
        then: Callable[[ObjectInfo], None],
    ) -> ObjectInfo:
        """Put the new version, but only over the version the guard checked.

        The in-process mutex orders writes within one server; compare-and-swap
        in the store orders them across servers sharing it (SQLite file, S3).
        """
        key = upload.key
        if not self.store.supports_compare_and_swap:
            return upload.put(record.to_metadata(), then)
        for attempt in range(4):
            try:
                return upload.replace(record.to_metadata(), checked, then)
            except WriteRace:
                # A put retried after a lost response fails its own precondition:
                # if the bytes now current are ours, our write is what landed.
                now = self.store.head(key)
                landed = StateVersion.metadata_fields(dict(now.metadata)) if now else {}
                if now is not None and landed.get("sha256") == record.sha256:
                    then(now)
                    return now
                unchanged = (now is None and checked is None) or (
                    now is not None and checked is not None and now.version_id == checked.version_id
                )
                # Refused although nothing changed: the service's answer and its
                # listing disagree for a moment (seen on S3 behind a flaky link).
                if not unchanged or attempt == 3:
                    raise
                time.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def _keep_digest(self, key: str, md5_hex: str, *, changed: bool) -> None:
        """Bring the digest up to date: written after a new version (the bytes
        changed, so must it), checked first after an unchanged write."""
        table = self.locks.locks
        if table.keeps_digests and (changed or table.get_digest(key) != md5_hex):
            table.put_digest(key, md5_hex)

    def unkept_digest(self, name: StateName) -> str | None:
        """Why a write of ``name`` left Terraform's DynamoDB digest as it was, where it
        may matter: a store in Terraform's ``backend "s3"`` layout whose lock tables keep
        no digest (no ``dynamodb://`` given). The table is named nowhere in the bucket,
        so whether one is in use cannot be known here; None when the digest was kept or
        there is none to keep."""
        if self.locks.locks.keeps_digests or self.store.scheme != "s3":
            return None
        bucket = self.store.lock_namespace
        return (
            f"the DynamoDB digest of {name} was not updated: no --locks dynamodb://TABLE "
            f"was given. If Terraform uses s3://{bucket} with dynamodb_table, its next read "
            'fails with "state data in S3 does not have the expected content": run '
            f"'statekeeper doctor --bucket {bucket} --table TABLE --fix' now, and give "
            "--locks dynamodb://TABLE with every write to this bucket"
        )

    def forget(self, key: str) -> None:
        """``key``'s current version changed outside a write (a restore, a purge):
        the next write checks against the store, not the remembered version."""
        self._known.forget(key)

    def delete(self, name: StateName, caller: Caller, *, lock_id: str | None = None) -> None:
        """Delete the current state (a versioned store keeps its history)."""
        with self.events.event(Action.DELETE, caller, name) as event:
            event.lock_id = lock_id
            require(self.policy, caller, name, Permission.ADMIN, "delete")
            key = str(name)
            with self.locks.serialized(name):
                self.locks.fence(name, lock_id, caller)
                self._known.forget(key)
                if self.store.head(key) is None:
                    raise StateNotFound(f"there is no state named {name}")
                self.store.delete(key)
                self.locks.locks.delete_digest(key)


def _version(key: str, info: ObjectInfo, written: StateVersion) -> StateVersion:
    """The version ``info`` describes; what its metadata lacks (a state written by
    Terraform's own S3 backend) comes from the facts of the bytes just written."""
    version = version_from_info(key, info)
    return replace(
        version,
        md5=version.md5 or written.md5,
        sha256=version.sha256 or written.sha256,
        serial=version.serial if version.serial is not None else written.serial,
        lineage=version.lineage if version.lineage is not None else written.lineage,
    )
