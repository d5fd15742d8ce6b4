"""One stored version of a state, and how its facts travel as object metadata."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from statekeeper.times import format_rfc3339, parse_rfc3339

if TYPE_CHECKING:
    from statekeeper.storage.base import ObjectInfo

__all__ = ["Provenance", "StateVersion", "listed_facts", "version_from_info"]


@dataclass(frozen=True)
class Provenance:
    """Who wrote a version, and when, where it was first written (a migration's source)."""

    actor: str | None
    created: datetime | None


@dataclass(frozen=True)
class StateVersion:
    """One immutable version of a state, as the store records it."""

    name: str
    version_id: str
    size: int
    created: datetime
    md5: str | None = None
    sha256: str | None = None
    serial: int | None = None
    lineage: str | None = None
    lock_id: str | None = None
    actor: str | None = None
    is_current: bool = False
    #: Who copied this version here (``migrate``); ``actor`` and ``created`` are
    #: then the source's: who wrote it first, and when.
    migrated_by: str | None = None
    #: The version a rollback restored into this one: never compacted or pruned.
    restored_from: str | None = None
    #: Intermediate snapshots written under this version's lock that compaction
    #: removed; kept beside the store (``state/replaced.py``), not in metadata.
    replaced: int = 0

    # Object metadata keys. S3 user metadata must be ASCII, so values are
    # percent-encoded on the way in and decoded on the way out.
    _META = (
        "serial",
        "lineage",
        "sha256",
        "md5",
        "lock-id",
        "actor",
        "migrated-by",
        "created",
        "restored-from",
    )

    def to_metadata(self) -> dict[str, str]:
        values = {
            "serial": None if self.serial is None else str(self.serial),
            "lineage": self.lineage,
            "sha256": self.sha256,
            "md5": self.md5,
            "lock-id": self.lock_id,
            "actor": self.actor,
            "migrated-by": self.migrated_by,
            "restored-from": self.restored_from,
            # The store's own time is the write's; a migrated version keeps its source's.
            "created": format_rfc3339(self.created) if self.migrated_by else None,
        }
        return {k: quote(v, safe="") for k, v in values.items() if v is not None}

    @staticmethod
    def metadata_fields(metadata: Mapping[str, str]) -> dict[str, Any]:
        """The StateVersion fields recorded in object metadata (missing ones absent).

        A request decodes one version's metadata several times (a GET's answer, the
        version it remembers, the write that follows and its compaction): decoded
        once, and a copy handed out each time.
        """
        return dict(_decoded(tuple(metadata.items())))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version_id": self.version_id,
            "serial": self.serial,
            "lineage": self.lineage,
            "size": self.size,
            "md5": self.md5,
            "sha256": self.sha256,
            "created": format_rfc3339(self.created),
            "lock_id": self.lock_id,
            "actor": self.actor,
            "migrated_by": self.migrated_by,
            "restored_from": self.restored_from,
            "replaced": self.replaced,
            "is_current": self.is_current,
        }


@functools.lru_cache(maxsize=1024)
def _decoded(items: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """:meth:`StateVersion.metadata_fields` of ``items``; never changed (callers get copies)."""
    meta = {k.lower(): unquote(v) for k, v in items}
    out: dict[str, Any] = {}
    if meta.get("serial", "").isascii() and meta.get("serial", "").isdigit():
        out["serial"] = int(meta["serial"])
    for key, attr in (
        ("lineage", "lineage"),
        ("sha256", "sha256"),
        ("md5", "md5"),
        ("lock-id", "lock_id"),
        ("actor", "actor"),
        ("migrated-by", "migrated_by"),
        ("restored-from", "restored_from"),
    ):
        if key in meta:
            out[attr] = meta[key]
    if "created" in meta:
        try:
            out["created"] = parse_rfc3339(meta["created"])
        except ValueError:
            pass  # the store's own time stands
    return out


def listed_facts(info: ObjectInfo) -> tuple[int | None, str | None, datetime]:
    """The serial and lineage statekeeper recorded in a version's metadata (None, None
    where it recorded none: a state written by Terraform's own backend), and when the
    version was written: a migrated version keeps its source's time, as its history
    shows it; else (or where the listing carries no metadata) the store's."""
    fields = StateVersion.metadata_fields(dict(info.metadata)) if info.has_metadata else {}
    return fields.get("serial"), fields.get("lineage"), fields.get("created", info.last_modified)


def version_from_info(name: str, info: ObjectInfo, data: bytes | None = None) -> StateVersion:
    """A StateVersion from object facts; ``data`` fills what metadata lacks.

    States written by Terraform's own S3 backend carry no statekeeper metadata,
    so their serial and lineage come from the bytes when we have them.
    """
    fields = StateVersion.metadata_fields(dict(info.metadata))
    if data is not None:
        # Only what the metadata lacks: hashing a large state twice costs seconds.
        if "md5" not in fields:
            fields["md5"] = hashlib.md5(data).hexdigest()
        if "sha256" not in fields:
            fields["sha256"] = hashlib.sha256(data).hexdigest()
        if "serial" not in fields or "lineage" not in fields:
            # Imported here: only a foreign object's read parses, and a CLI's start-up.
            from statekeeper.terraform.statedoc import StateDoc

            try:
                doc = StateDoc.parse(data, keep_document=False)
            except Exception:  # noqa: BLE001 - a foreign object need not be a state
                pass
            else:
                fields.setdefault("serial", doc.serial)
                fields.setdefault("lineage", doc.lineage)
    fields.setdefault("created", info.last_modified)
    return StateVersion(
        name=name,
        version_id=info.version_id,
        size=info.size,
        is_current=info.is_latest,
        **fields,
    )
