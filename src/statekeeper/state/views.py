"""Every JSON shape statekeeper answers with, defined once.

The operator (:mod:`statekeeper.state.operator`) returns these models; the
JSON API publishes them as its response models (so ``/openapi.json`` carries
their schemas); ``statekeeper … --json`` prints ``model_dump(mode="json")`` of
the same models, and the CLI's ``--server`` backend parses the API's answers
back into them. A field added here shows up in all three at once.

Attribute and output values are put into these models by
:mod:`statekeeper.state.diff` only, after the rules of
:mod:`statekeeper.state.sensitive`: a sensitive value is ``None`` with
``sensitive`` set, never the value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from statekeeper.times import format_rfc3339

if TYPE_CHECKING:
    from datetime import datetime

    from statekeeper.events import Event
    from statekeeper.security.tokens import TokenRecord
    from statekeeper.state.version import StateVersion
    from statekeeper.terraform.lockinfo import LockInfo

__all__ = [
    "AttributeChange",
    "AuditEventView",
    "AuditList",
    "BeforeAfter",
    "DiffView",
    "ErrorBody",
    "HistoryEntry",
    "InstanceChange",
    "LockEntry",
    "MigrationResult",
    "OutputChange",
    "OutputValue",
    "PushResult",
    "Release",
    "RollbackResult",
    "StateCopied",
    "StateDetail",
    "StateDiff",
    "StateEntry",
    "TokenCreated",
    "TokenList",
    "TokenView",
    "VersionView",
]


def _time(when: datetime | None) -> str | None:
    return None if when is None else format_rfc3339(when)


def _age_source(lock: LockInfo) -> Literal["server", "client"] | None:
    source = lock.age_source
    return "server" if source == "server" else "client" if source == "client" else None


def _who(lock: LockInfo) -> str:
    return lock.who or lock.actor or ""


def _age(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


class View(BaseModel):
    # Frozen: a view is an answer, not a working object. Unknown keys in an
    # answer from a newer server are ignored rather than refused.
    model_config = ConfigDict(frozen=True, extra="ignore")


class LockEntry(View):
    """One held lock, as ``statekeeper locks`` and ``GET /api/v1/locks`` show it."""

    name: str
    id: str
    operation: str
    who: str
    info: str
    version: str
    path: str
    created: str | None = Field(description="RFC 3339, UTC: the client's Created, for display")
    acquired: str | None = Field(
        None, description="RFC 3339, UTC: when the server took the lock (None: not taken by one)"
    )
    age_seconds: float | None
    age_source: Literal["server", "client"] | None = Field(
        None,
        description="Whose clock the age comes from: the server's receive time, or (a lock "
        "written by Terraform's own backend) the client's Created",
    )
    actor: str | None
    remote_addr: str | None
    kinds: list[str] = Field(description="Lock tables holding it: dynamodb, s3lock, sqlite…")
    drift: bool = Field(description="Held in one of two configured lock tables only")
    missing: list[str] = Field(description="With two lock tables: the ones NOT holding it")
    damaged: str | None = Field(
        default=None,
        description="Why the lock object or item could not be read (it is still a lock)",
    )
    mode: Literal["exclusive", "shared"] = Field(
        default="exclusive",
        description="shared: a plan sharing the state with other plans (lock policy "
        "shared-plans); exclusive: any other holder",
    )
    primary: bool = Field(
        default=True,
        description="The holder Terraform's own backend sees (the lock item or file); false: "
        "a plan sharing the lock, recorded beside it",
    )

    @classmethod
    def of(
        cls, name: str, lock: LockInfo, kinds: list[str], missing: list[str], age: float | None
    ) -> LockEntry:
        return cls(
            name=name,
            id=lock.id,
            operation=lock.operation,
            who=_who(lock),
            info=lock.info,
            version=lock.version,
            path=lock.path,
            created=_time(lock.client_created),
            acquired=_time(lock.acquired),
            age_seconds=_age(age),
            age_source=_age_source(lock),
            actor=lock.actor,
            remote_addr=lock.remote_addr,
            kinds=kinds,
            drift=bool(missing),
            missing=missing,
            damaged=lock.damaged,
        )


class StateEntry(View):
    """One state of a listing (``statekeeper states``, ``GET /api/v1/states``)."""

    name: str
    size: int
    last_modified: str
    version_id: str
    serial: int | None = Field(description="None when unknown (see serial_known)")
    serial_known: bool = Field(
        description="False when the listing does not carry the serial and lineage (an S3 "
        "listing has no object metadata): ask with details=true, at a HEAD per state"
    )
    lineage: str | None = Field(description="None when unknown (see serial_known)")
    locked: bool
    lock: LockEntry | None
    versions: int | None = Field(description="Version count, only with details=true")
    workspace: str | None = Field(
        None, description="Workspace W of a state named <workspace_key_prefix>/W/KEY, else None"
    )


class VersionView(View):
    """One stored version of a state and the facts its metadata records."""

    name: str
    version_id: str
    serial: int | None
    lineage: str | None
    size: int
    md5: str | None
    sha256: str | None
    created: str
    lock_id: str | None
    actor: str | None = Field(description="Who wrote it (for a migrated version: at the source)")
    migrated_by: str | None = Field(None, description="Who copied it here with migrate")
    restored_from: str | None = Field(None, description="The version a rollback restored")
    replaced: int = Field(0, description="Intermediate snapshots of its lock it replaced")
    is_current: bool

    @classmethod
    def of(cls, v: StateVersion) -> VersionView:
        return cls(
            name=v.name,
            version_id=v.version_id,
            serial=v.serial,
            lineage=v.lineage,
            size=v.size,
            md5=v.md5,
            sha256=v.sha256,
            created=format_rfc3339(v.created),
            lock_id=v.lock_id,
            actor=v.actor,
            migrated_by=v.migrated_by,
            restored_from=v.restored_from,
            replaced=v.replaced,
            is_current=v.is_current,
        )


class HistoryEntry(View):
    """One version in ``statekeeper history`` / ``GET /api/v1/versions/{name}``."""

    version_id: str
    serial: int | None
    lineage: str | None
    created: str
    actor: str | None
    migrated_by: str | None = None
    size: int
    sha256: str | None
    is_current: bool
    resources_changed: int | None = Field(
        description="Instances added, removed or changed against the previous version"
    )
    replaced: int = Field(
        0, description="Intermediate snapshots of the same lock that compaction removed"
    )

    @classmethod
    def of(cls, v: StateVersion, resources_changed: int | None) -> HistoryEntry:
        return cls(
            version_id=v.version_id,
            serial=v.serial,
            lineage=v.lineage,
            created=format_rfc3339(v.created),
            actor=v.actor,
            migrated_by=v.migrated_by,
            size=v.size,
            sha256=v.sha256,
            is_current=v.is_current,
            resources_changed=resources_changed,
            replaced=v.replaced,
        )


class OutputValue(View):
    value: Any = Field(default=None, description="None when sensitive")
    sensitive: bool


class StateDetail(View):
    """One version of a state: its facts, resources and masked outputs (``show``)."""

    name: str
    version: VersionView
    locked: bool
    lock_id: str | None
    lock_mode: Literal["exclusive", "shared"] | None = Field(
        default=None, description="shared: plans share the lock (lock policy shared-plans)"
    )
    lock_holders: int = Field(
        default=0,
        description="Holders of the lock: the one Terraform sees and the plans sharing it",
    )
    encrypted: bool
    terraform_version: str | None = None
    resources: list[str] | None = Field(description="None when encrypted by OpenTofu")
    outputs: dict[str, OutputValue] | None = Field(description="None when encrypted by OpenTofu")


class AttributeChange(View):
    path: str = Field(description='Terraform\'s notation: tags["Name"], list[0].x')
    before: Any = Field(default=None, description="None when sensitive")
    after: Any = Field(default=None, description="None when sensitive")
    sensitive: bool


class InstanceChange(View):
    address: str
    changes: list[AttributeChange]


class OutputChange(View):
    name: str
    action: str = Field(description="added, removed or changed")
    before: Any = Field(default=None, description="None when sensitive")
    after: Any = Field(default=None, description="None when sensitive")
    sensitive: bool


class BeforeAfter(View):
    before: Any
    after: Any


class StateDiff(View):
    """What changed between two state documents, instance by instance."""

    serial: BeforeAfter
    lineage: BeforeAfter
    resources_changed: int
    added: list[str]
    removed: list[str]
    changed: list[InstanceChange]
    outputs: list[OutputChange]

    @property
    def empty(self) -> bool:
        return not (self.resources_changed or self.outputs)


class DiffView(StateDiff):
    """A :class:`StateDiff` between two named versions of one state."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    name: str
    from_: str | None = Field(alias="from", description="None: compared with no state")
    to: str

    @classmethod
    def between(cls, name: str, before: str | None, after: str, diff: StateDiff) -> DiffView:
        # "from" is a Python keyword: the field is from_, spelled "from" in JSON.
        return cls.model_validate({**dict(diff), "name": name, "from": before, "to": after})


class RollbackResult(View):
    name: str
    restored_version: str
    restored_serial: int | None
    previous_version: str
    previous_serial: int | None
    version: VersionView = Field(description="The new version the rollback wrote")


class PushResult(View):
    name: str
    created: bool = Field(description="False when the bytes were already current")
    version: VersionView
    history_warning: str | None = Field(
        None,
        description="Set when the store keeps no history: the state this push replaced is "
        "gone for good, and why",
    )


class Release(View):
    """A lock removed by ``unlock`` or ``locks reap`` (or, in a dry run, that would be)."""

    name: str
    id: str
    operation: str
    who: str
    created: str | None = Field(description="RFC 3339, UTC: the client's Created")
    acquired: str | None = Field(None, description="RFC 3339, UTC: the server's receive time")
    age_seconds: float | None
    age_source: Literal["server", "client"] | None = None
    removed: bool
    reason: str

    @classmethod
    def of(
        cls, name: str, lock: LockInfo, age: float | None, removed: bool, reason: str
    ) -> Release:
        return cls(
            name=name,
            id=lock.id,
            operation=lock.operation,
            who=_who(lock),
            created=_time(lock.client_created),
            acquired=_time(lock.acquired),
            age_seconds=_age(age),
            age_source=_age_source(lock),
            removed=removed,
            reason=reason,
        )


class StateCopied(View):
    """One state of a migration."""

    name: str
    copied: int = Field(description="Versions copied")
    copied_versions: list[str] = Field(description="The source's IDs of the versions copied")
    skipped: int = Field(description="Versions the destination already held")
    planned: int = Field(description="Versions a dry run would copy")
    bytes: int = Field(description="Bytes copied")
    refused: str | None = Field(
        None, description="Why the copy would be refused (a dry run); null: it would go ahead"
    )


class MigrationResult(View):
    """What ``statekeeper migrate`` did (or, with ``dry_run``, would do)."""

    dry_run: bool
    states: list[StateCopied]
    copied: int
    skipped: int
    planned: int
    unaddressable: list[str] = Field(
        default_factory=list,
        description="Source keys not copied: not state names statekeeper can address "
        "(the run exits 1)",
    )


class AuditEventView(View):
    """One event of the audit trail (:class:`statekeeper.events.Event` as JSON)."""

    action: str
    actor: str
    outcome: str
    state: str | None = None
    version: str | None = None
    serial: int | None = None
    remote_addr: str | None = None
    claims: dict[str, str] = Field(default_factory=dict)
    lock_id: str | None = None
    who: str | None = None
    operation: str | None = None
    detail: str | None = None
    count: int = Field(1, description="Repeated denials coalesced into this one event")
    time: str
    id: str

    @classmethod
    def of(cls, e: Event) -> AuditEventView:
        return cls.model_validate(e.to_json())


class AuditList(View):
    events: list[AuditEventView]


class TokenView(View):
    """An API token as listed: never its secret."""

    name: str
    scopes: list[str]
    created: str
    expires: str | None

    @classmethod
    def of(cls, record: TokenRecord) -> TokenView:
        return cls(
            name=record.name,
            scopes=list(record.scopes),
            created=format_rfc3339(record.created),
            expires=_time(record.expires),
        )


class TokenCreated(TokenView):
    secret: str = Field(description="Shown in this answer only; the server keeps a hash")

    @classmethod
    def issued(cls, record: TokenRecord, secret: str) -> TokenCreated:
        return cls(**dict(TokenView.of(record)), secret=secret)


class TokenList(View):
    tokens: list[TokenView]


class ErrorBody(BaseModel):
    """Every error answer. A lock conflict also carries the holder's LockInfo
    fields (``ID``, ``Who``, …) at the top level, as Terraform reads them."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="A stable code: state_not_found, locked, bad_request…")
    message: str = Field(description="What went wrong and what to do about it")
