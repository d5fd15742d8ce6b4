"""The values statekeeper passes around: state names, locks, versions, state facts.

All of them are frozen: a value read from storage is never mutated, a changed
value is a new one. Parsing from the wire lives here too, so that the server,
the CLI and the drivers agree on what a valid name, lock or state is.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

from statekeeper.errors import InvalidLockInfo, InvalidState, InvalidStateName

__all__ = [
    "MAX_NAME_BYTES",
    "Caller",
    "LockInfo",
    "StateDoc",
    "StateName",
    "StateVersion",
    "format_rfc3339",
    "parse_rfc3339",
    "utcnow",
]

MAX_NAME_BYTES = 1024
_SEGMENT = re.compile(r"[A-Za-z0-9._:=+-]+")
NAME_RULES = (
    "a state name is one or more '/'-separated segments of letters, digits and "
    "'._:=+-', with no empty, '.' or '..' segment, at most 1024 bytes "
    "(for example 'team/app/prod.tfstate')"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


# Go writes RFC 3339 with up to nine fractional digits; Python's parser takes six.
_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 time with a zone, as Go's ``time.Time`` marshals it."""
    m = _RFC3339.match(text)
    if not m:
        raise ValueError(f"{text!r} is not an RFC 3339 time with a zone")
    date, clock, frac, zone = m.groups()
    frac = (frac or "0")[:6].ljust(6, "0")
    zone = "+00:00" if zone in ("Z", "z") else zone
    parsed = datetime.fromisoformat(f"{date}T{clock}.{frac}{zone}")
    try:
        # Times are shown and stored in UTC; one outside UTC's years 1-9999
        # would fail there (a 500 on the next conflict) instead of here.
        parsed.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{text!r} is outside the years 1-9999 in UTC") from exc
    return parsed


def format_rfc3339(when: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, the form Go and Terraform accept."""
    text = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


@dataclass(frozen=True, order=True)
class StateName:
    """A validated state name; it is also the storage key under the store's prefix."""

    value: str

    def __post_init__(self) -> None:
        v = self.value
        if not v:
            raise InvalidStateName("the state name is empty; " + NAME_RULES)
        if len(v.encode()) > MAX_NAME_BYTES:
            raise InvalidStateName(f"the state name is {len(v.encode())} bytes long; " + NAME_RULES)
        for segment in v.split("/"):
            if segment in ("", ".", ".."):
                raise InvalidStateName(
                    f"the state name {v!r} has an empty, '.' or '..' segment; " + NAME_RULES
                )
            if not _SEGMENT.fullmatch(segment):
                raise InvalidStateName(
                    f"the state name {v!r} has a character that is not allowed; " + NAME_RULES
                )

    def __str__(self) -> str:
        return self.value


# LockInfo fields in the order Terraform marshals them.
_LOCK_FIELDS = ("ID", "Operation", "Info", "Who", "Version", "Created", "Path")


@dataclass(frozen=True)
class LockInfo:
    """A state lock as Terraform describes it, plus the facts the server adds.

    ``body`` is the JSON the client sent, kept verbatim: it is what a 423 answer
    echoes and what Terraform's S3 backend reads from the ``Info`` attribute.
    """

    id: str
    body: bytes
    operation: str = ""
    info: str = ""
    who: str = ""
    version: str = ""
    created: datetime | None = None
    path: str = ""
    # Server-side facts; not part of Terraform's LockInfo.
    actor: str | None = None
    remote_addr: str | None = None
    acquired: datetime | None = None

    @classmethod
    def parse(cls, body: bytes) -> LockInfo:
        """Validate a LockInfo JSON body the way Go's decoder would read it."""
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError) as exc:
            # RecursionError: nesting deeper than the parser's stack.
            raise InvalidLockInfo(f"the lock info is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise InvalidLockInfo("the lock info must be a JSON object with at least an ID")
        # Go matches field names case-insensitively.
        fields = {k.lower(): v for k, v in raw.items()}
        values: dict[str, str] = {}
        for name in _LOCK_FIELDS:
            value = fields.get(name.lower())
            if name == "Created":
                continue
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise InvalidLockInfo(f"the lock info field {name!r} must be a string")
            values[name] = value
        if not values["ID"]:
            raise InvalidLockInfo("the lock info has no ID; send the lock ID in the 'ID' field")
        created_raw = fields.get("created")
        created: datetime | None = None
        if created_raw is not None:
            if not isinstance(created_raw, str):
                raise InvalidLockInfo("the lock info field 'Created' must be an RFC 3339 string")
            try:
                created = parse_rfc3339(created_raw)
            except ValueError as exc:
                raise InvalidLockInfo(
                    f"the lock info field 'Created' is not an RFC 3339 time with a zone: {exc}"
                ) from exc
        return cls(
            id=values["ID"],
            body=bytes(body),
            operation=values["Operation"],
            info=values["Info"],
            who=values["Who"],
            version=values["Version"],
            created=created,
            path=values["Path"],
        )

    @classmethod
    def new(
        cls,
        operation: str,
        who: str,
        *,
        info: str = "",
        version: str = "",
        path: str = "",
        lock_id: str | None = None,
        created: datetime | None = None,
    ) -> LockInfo:
        """A fresh lock, marshalled compactly in Terraform's field order."""
        when = created or utcnow()
        raw = {
            "ID": lock_id or str(uuid.uuid4()),
            "Operation": operation,
            "Info": info,
            "Who": who,
            "Version": version,
            "Created": format_rfc3339(when),
            "Path": path,
        }
        return cls.parse(json.dumps(raw, separators=(",", ":")).encode())

    def with_facts(self, actor: str | None, remote_addr: str | None) -> LockInfo:
        return replace(self, actor=actor, remote_addr=remote_addr, acquired=utcnow())

    @property
    def is_zero_valued(self) -> bool:
        """OpenTofu's force-unlock body: an ID and every other field at its zero value."""
        zero_created = self.created is None or self.created.year == 1
        return zero_created and not (
            self.operation or self.info or self.who or self.version or self.path
        )

    @property
    def since(self) -> datetime | None:
        """When the lock was taken: the client's Created, else the server's time."""
        return self.created if self.created and self.created.year > 1 else self.acquired

    def describe(self) -> str:
        """One line naming the holder, for CLI messages and logs."""
        parts = [f"ID {self.id}"]
        if self.who or self.actor:
            parts.append(f"held by {self.who or self.actor}")
        if self.operation:
            parts.append(f"for {self.operation}")
        since = self.since
        if since:
            parts.append(f"since {format_rfc3339(since)}")
        return " ".join(parts)


_NESTED = object()


def _top_level(data: bytes) -> Any:
    """``json.loads`` that keeps only the outermost object's scalar members.

    The decoder calls the hook innermost first, so the top-level object is the
    last call; every nested object becomes a placeholder the moment it is built.
    """
    last: list[list[tuple[str, Any]]] = []

    def hook(pairs: list[tuple[str, Any]]) -> object:
        last[:] = [pairs]
        return _NESTED

    result = json.loads(data, object_pairs_hook=hook)
    if result is not _NESTED:
        return result  # not an object at the top: the caller rejects it
    return {k: v for k, v in last[0] if v is not _NESTED and not isinstance(v, list)}


@dataclass(frozen=True)
class StateDoc:
    """The top-level facts of a state document, read without re-serializing it.

    Both Terraform's state (format 1-4) and OpenTofu's encrypted envelope carry
    ``serial`` and ``lineage`` at the top level; that is all the server needs.
    """

    serial: int
    lineage: str
    format_version: int | None
    terraform_version: str | None
    encrypted: bool
    document: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def parse(cls, data: bytes, *, keep_document: bool = True) -> StateDoc:
        """Validate ``data`` as a state and read its top-level facts.

        With ``keep_document=False`` the whole body is still checked to be JSON,
        but nested objects are dropped as soon as they are parsed and
        ``document`` holds only the top-level scalars: a 100 MB state then costs
        no parsed tree (several times its size) and a quarter of the time.
        """
        if not data or data.isspace():
            raise InvalidState("the body is empty; send the state JSON")
        try:
            doc = json.loads(data) if keep_document else _top_level(data)
        except UnicodeDecodeError as exc:
            raise InvalidState(f"the state is not UTF-8 text: {exc}") from exc
        except (ValueError, RecursionError) as exc:
            # RecursionError: nesting deeper than the parser's stack.
            raise InvalidState(f"the state could not be parsed as JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise InvalidState("the state must be a JSON object")
        encrypted = "encryption_version" in doc or "encrypted_data" in doc
        if encrypted:
            if not isinstance(doc.get("encrypted_data"), str):
                raise InvalidState("the OpenTofu encrypted state has no 'encrypted_data' string")
            version: int | None = None
        else:
            version = doc.get("version")
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise InvalidState(
                    "the body is not a Terraform state: it needs a 'version' number "
                    "(format 4 today) or an OpenTofu 'encryption_version' envelope"
                )
            if version > 4:
                raise InvalidState(
                    f"the state uses format version {version}, which is not supported "
                    "(Terraform and OpenTofu write format 4)"
                )
        serial = doc.get("serial", 0)
        if isinstance(serial, bool) or not isinstance(serial, int) or serial < 0:
            raise InvalidState("the state's 'serial' must be a whole number of 0 or more")
        lineage = doc.get("lineage", "")
        if not isinstance(lineage, str):
            raise InvalidState("the state's 'lineage' must be a string")
        tf_version = doc.get("terraform_version")
        return cls(
            serial=serial,
            lineage=lineage,
            format_version=version,
            terraform_version=tf_version if isinstance(tf_version, str) else None,
            encrypted=encrypted,
            document=doc,
        )


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

    # Object metadata keys. S3 user metadata must be ASCII, so values are
    # percent-encoded on the way in and decoded on the way out.
    _META = ("serial", "lineage", "sha256", "md5", "lock-id", "actor")

    def to_metadata(self) -> dict[str, str]:
        values = {
            "serial": None if self.serial is None else str(self.serial),
            "lineage": self.lineage,
            "sha256": self.sha256,
            "md5": self.md5,
            "lock-id": self.lock_id,
            "actor": self.actor,
        }
        return {k: quote(v, safe="") for k, v in values.items() if v is not None}

    @staticmethod
    def metadata_fields(metadata: dict[str, str]) -> dict[str, Any]:
        """The StateVersion fields recorded in object metadata (missing ones absent)."""
        meta = {k.lower(): unquote(v) for k, v in metadata.items()}
        out: dict[str, Any] = {}
        if meta.get("serial", "").isdigit():
            out["serial"] = int(meta["serial"])
        for key, attr in (
            ("lineage", "lineage"),
            ("sha256", "sha256"),
            ("md5", "md5"),
            ("lock-id", "lock_id"),
            ("actor", "actor"),
        ):
            if key in meta:
                out[attr] = meta[key]
        return out

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
            "is_current": self.is_current,
        }


@dataclass(frozen=True)
class Caller:
    """Who is acting: a token name, an OIDC subject, or the local operator."""

    actor: str = "anonymous"
    remote_addr: str | None = None
    claims: dict[str, str] = field(default_factory=dict)
    #: The grants ("PATTERN:PERMISSION") of an authenticated caller. None means the
    #: caller is not subject to grants: the local operator, or a loopback server
    #: with no access control configured (see services/policy.py).
    scopes: tuple[str, ...] | None = None
