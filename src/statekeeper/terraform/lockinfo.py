"""Terraform's LockInfo: the JSON a client sends with LOCK and the holder a 423 echoes."""

from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from statekeeper.errors import InvalidLockInfo, PayloadTooLarge
from statekeeper.terraform import gojson
from statekeeper.terraform.layout import LOCK_FIELDS
from statekeeper.times import format_rfc3339, parse_rfc3339, utcnow

__all__ = ["LOCK_FIELDS", "MAX_LOCK_INFO", "LockInfo", "lock_info_too_large"]

#: The default limit on a LockInfo body. Terraform sends a few hundred bytes;
#: every 423 and every lock listing echoes the holder's, so it must stay small.
MAX_LOCK_INFO = 16 * 1024
#: Bodies up to this size are parsed once and remembered (see :func:`_parse`).
_REMEMBERED = 2048

#: ``Created`` as Go's ``time.Time`` reads it back from JSON: a 423 echoes the holder's
#: info as sent, and a waiting Terraform fails on the whole answer ("failed to
#: unmarshal body") when it cannot parse this field. Go takes neither the lower-case
#: ``t`` and ``z`` nor the space that RFC 3339 and Python allow.
_GO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})\Z")


#: What a LOCK's fields may not hold: the C0 controls (tab and, in ``Info``, line
#: breaks aside), DEL, the C1 controls, and the bidirectional formatting characters.
#: Terraform writes none; a holder's fields are shown to every operator who lists the
#: locks or is refused one, where a terminal would obey them (an ESC sequence recolours
#: or clears it; U+202E turns the rest of a line around).
_UNSHOWABLE = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_LINE_BREAK = re.compile(r"[\n\r]")


def lock_info_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the lock info is larger than the limit of {limit} bytes (max_lock_info; "
        "Terraform sends a few hundred bytes): shorten its Info or Who"
    )


def _decode(body: bytes) -> object:
    try:
        return gojson.loads(gojson.decode_text(bytes(body)))
    except gojson.NotGoJson as exc:
        raise InvalidLockInfo(f"the lock info is not valid: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        # RecursionError: nesting deeper than the parser's stack.
        raise InvalidLockInfo(f"the lock info is not valid JSON: {exc}") from exc


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
    #: Why the stored lock could not be read as a LockInfo; None for a sound lock.
    damaged: str | None = None

    @classmethod
    def parse(cls, body: bytes, *, limit: int | None = None) -> LockInfo:
        """Validate a LockInfo JSON body the way Go's decoder would read it.

        ``limit`` (bytes) applies to what a client sends; a lock already in a
        store is read whatever its size.
        """
        if limit is not None and len(body) > limit:
            raise lock_info_too_large(limit)
        body = bytes(body)
        return _parse(body) if len(body) <= _REMEMBERED else cls._parse(body)

    @classmethod
    def _parse(cls, body: bytes) -> LockInfo:
        raw = _decode(body)
        if not isinstance(raw, dict):
            raise InvalidLockInfo("the lock info must be a JSON object with at least an ID")
        for key, value in raw.items():
            if not (gojson.is_text(key) and gojson.is_text(value)):
                raise InvalidLockInfo(
                    f"the lock info field {key.encode('utf-8', 'backslashreplace').decode()!r} "
                    "holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), "
                    "which is not text"
                )
        # Go matches field names case-insensitively.
        fields = {k.lower(): v for k, v in raw.items()}
        values: dict[str, str] = {}
        for name in LOCK_FIELDS:
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
                if not _GO_TIME.match(created_raw):
                    raise ValueError(f"{created_raw!r} is not in the form Go reads")
                created = parse_rfc3339(created_raw)
            except ValueError as exc:
                raise InvalidLockInfo(
                    f"the lock info field 'Created' is not an RFC 3339 time with a zone: {exc}; "
                    "write it as Terraform does, e.g. 2026-11-23T11:13:27.558548621Z "
                    "(an upper-case T and Z, or an offset such as +01:00)"
                ) from exc
        return cls(
            id=values["ID"],
            body=body,
            operation=values["Operation"],
            info=values["Info"],
            who=values["Who"],
            version=values["Version"],
            created=created,
            path=values["Path"],
        )

    def check_shown(self) -> None:
        """Refuse a LOCK whose fields a terminal would obey instead of show
        (:data:`_UNSHOWABLE`; a line break outside ``Info`` too): they are echoed to
        every operator who lists the locks or is refused this one."""
        for name, value in (
            ("ID", self.id),
            ("Operation", self.operation),
            ("Who", self.who),
            ("Version", self.version),
            ("Path", self.path),
            ("Info", self.info),
        ):
            found = _UNSHOWABLE.search(value) or (
                _LINE_BREAK.search(value) if name != "Info" else None
            )
            if found is not None:
                raise InvalidLockInfo(
                    f"the lock info field {name!r} holds the control character "
                    f"U+{ord(found.group()):04X}, which a terminal listing the lock would "
                    "act on; send the field as plain text, as Terraform writes it"
                )

    @classmethod
    def unreadable(cls, body: bytes, reason: str) -> LockInfo:
        """A stored lock that is not a LockInfo, kept so listings can report it.

        It has no ID, so no unlock by ID can match it; removing it takes a
        forced unlock once no Terraform run holds the state.
        """
        return cls(id="", body=bytes(body), damaged=reason)

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

    def body_with_path(self, path: str) -> bytes:
        """The body as a lock file or DynamoDB item stores it: with ``Path`` set as
        Terraform's S3 backend writes it (``BUCKET/KEY``; the http backend sends it
        empty), the bytes kept as sent when it already is."""
        raw = json.loads(self.body)
        if raw.get("Path") == path:
            return self.body
        raw["Path"] = path
        return json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

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
    def client_created(self) -> datetime | None:
        """The client's ``Created``, for display (the zero time of Go is no time)."""
        return self.created if self.created and self.created.year > 1 else None

    @property
    def since(self) -> datetime | None:
        """When the lock was taken, for its age: the server's receive time where a
        server took it; else (a lock written by Terraform's own backend "s3") the
        client's ``Created``, the best evidence there is. A client's clock may say
        anything: a ``Created`` in 2000 or 9999 must not decide when a lock is stale.
        """
        return self.acquired or self.client_created

    def age(self, now: datetime) -> float | None:
        """Seconds since :attr:`since` at ``now`` (never negative); None when unknown."""
        since = self.since
        return None if since is None else max(0.0, (now - since).total_seconds())

    @property
    def age_source(self) -> str | None:
        """Whose clock :attr:`since` comes from: ``server``, ``client``, or None."""
        if self.acquired is not None:
            return "server"
        return "client" if self.client_created is not None else None

    def describe(self) -> str:
        """One line naming the holder, for CLI messages and logs."""
        if self.damaged is not None:
            return f"a damaged lock ({self.damaged})"
        parts = [f"ID {self.id}"]
        if self.who or self.actor:
            parts.append(f"held by {self.who or self.actor}")
        if self.operation:
            parts.append(f"for {self.operation}")
        since = self.since
        if since:
            parts.append(f"since {format_rfc3339(since)}")
        return " ".join(parts)


@functools.lru_cache(maxsize=512)
def _parse(body: bytes) -> LockInfo:
    """LockInfo.parse of one body, remembered: a lock cycle reads the same holder's
    body about ten times (the LOCK, the fence, the write's event, the UNLOCK, each
    stored row read back), and a LockInfo is immutable. A refused body raises
    each time (exceptions are not remembered)."""
    return LockInfo._parse(body)
