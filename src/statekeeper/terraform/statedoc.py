"""The state document: its top-level facts, read and validated as Terraform's decoder would.

Terraform reads a state with Go's ``encoding/json``: the bytes must be UTF-8
JSON with no byte-order mark and no ``NaN``/``Infinity``; field names match
case-insensitively (the last match in the document wins); ``version`` and
``serial`` are unsigned 64-bit integers (format 1-3 keep the serial in a
signed one); ``lineage`` and ``terraform_version`` are strings, the latter a
valid version when not empty; ``outputs`` is an object and ``resources`` and
``check_results`` arrays. A state that breaks any of these is refused with a
400 naming the rule, because Terraform would fail to load it afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from statekeeper.errors import InvalidState
from statekeeper.terraform import gojson

__all__ = ["ARRAY", "EMPTY", "MAX_SERIAL", "OBJECT", "Nested", "StateDoc", "json_kind"]

#: Terraform's serial is a Go uint64.
MAX_SERIAL = 2**64 - 1
#: Empty bytes given as a state, in words for a request body and a file alike.
EMPTY = "the state is empty (no bytes, or only blanks): a state is the JSON Terraform writes"
#: Format 1-3 kept the serial in an int64 before the upgrade to format 4.
_MAX_LEGACY_SERIAL = 2**63 - 1
_SUPPORTED_FORMATS = range(1, 5)

# hashicorp/go-version's pattern, which Terraform applies to terraform_version.
_GO_VERSION = re.compile(
    r"v?([0-9]+(\.[0-9]+)*?)"
    r"(-([0-9]+[0-9A-Za-z\-~]*(\.[0-9A-Za-z\-~]+)*)|(-?([A-Za-z\-~]+[0-9A-Za-z\-~]*(\.[0-9A-Za-z\-~]+)*)))?"
    r"(\+([0-9A-Za-z\-~]+(\.[0-9A-Za-z\-~]+)*))?"
)


class Nested:
    """A nested value dropped by the top-level-only parse; ``kind`` is its JSON type."""

    def __init__(self, kind: str) -> None:
        self.kind = kind


#: What a nested object or array is read as when only the top level is kept.
OBJECT = Nested("an object")
ARRAY = Nested("an array")
_MISSING = object()


def _decode(data: bytes, keep_document: bool) -> tuple[Any, list[tuple[str, Any]]]:
    """The parsed document and the top-level object's members in document order."""
    try:
        text = gojson.decode_text(data)
    except gojson.NotGoJson as exc:
        raise InvalidState(f"the state is not JSON Terraform can read: {exc}") from exc
    # The decoder calls the hook innermost first, so the top-level object is the
    # last call. Without keep_document every nested object becomes a placeholder
    # the moment it is built: a 100 MB state then costs no parsed tree.
    last: list[list[tuple[str, Any]]] = [[]]

    def hook(pairs: list[tuple[str, Any]]) -> object:
        last[0] = pairs
        return dict(pairs) if keep_document else OBJECT

    try:
        doc = gojson.loads(text, object_pairs_hook=hook)
    except (ValueError, RecursionError) as exc:
        # RecursionError: nesting deeper than the parser's stack.
        raise InvalidState(f"the state could not be parsed as JSON: {exc}") from exc
    # Terraform never writes a surrogate escape (it writes UTF-8), so the full
    # look is only for bodies that have one.
    if gojson.has_surrogate_escape(text):
        whole = doc if keep_document else gojson.loads(text)
        if not gojson.is_text(whole):
            raise InvalidState(
                "the state holds a lone UTF-16 surrogate escape (an unpaired \\ud800-\\udfff), "
                "which is not text: Terraform would read it as U+FFFD, not as stored"
            )
    return doc, last[0]


def _fold(key: str) -> str:
    """A field name as Go's decoder compares it: each rune upper(lower(r))."""
    if key.isascii():
        return key.upper()  # the same for ASCII, and what Terraform writes
    out = []
    for ch in key:
        lowered = ch.lower()
        folded = lowered.upper() if len(lowered) == 1 else ch
        out.append(folded if len(folded) == 1 else ch)
    return "".join(out)


T = TypeVar("T")


def _member(pairs: list[tuple[str, Any]], name: str) -> Any:
    """The value Go would decode into field ``name``: the last case-insensitive match."""
    found = _members(pairs, name)
    return found[-1] if found else _MISSING


def _members(pairs: list[tuple[str, Any]], name: str) -> list[Any]:
    """Every value Go decodes into field ``name``, in document order."""
    wanted = name.upper()
    return [value for key, value in pairs if key == name or _fold(key) == wanted]


def _decoded(pairs: list[tuple[str, Any]], name: str, check: Callable[[Any], T], zero: T) -> T:
    """Field ``name`` as Go's decoder leaves it: each match in turn, a null leaving
    the field as it was. A match of the wrong type or out of range is an error even
    when a later one replaces it: Go keeps the first such error and returns it."""
    result = zero
    for value in _members(pairs, name):
        if value is not None:
            result = check(value)
    return result


def json_kind(value: Any) -> str:
    """How a message names a JSON value: "an object", "the number 1.5", "null"…"""
    if isinstance(value, Nested):
        return value.kind
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    return "null"


def _whole(value: Any, name: str, largest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= largest:
        raise InvalidState(
            f"the state's {name!r} is {json_kind(value)}; Terraform reads it as a whole number "
            f"from 0 to {largest}"
        )
    return value


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

        With ``keep_document=False`` the whole body is still checked to be JSON
        Terraform can decode, but nested objects are dropped as soon as they
        are parsed and ``document`` holds only the top-level scalars.

        simdjson reads it first (``terraform/fastcheck.py``); what it cannot
        vouch for is decided by Python's ``json`` with the rules above.
        """
        if not data or data.isspace():
            raise InvalidState(EMPTY)
        # Imported here: simdjson costs a CLI's start-up, and few commands read a state.
        from statekeeper.terraform import fastcheck

        fast = fastcheck.top_members(bytes(data), None if keep_document else (OBJECT, ARRAY))
        if fast is not None:
            return cls.from_members(fast[1], fast[0])
        doc, pairs = _decode(bytes(data), keep_document)
        if not isinstance(doc, dict) and doc is not OBJECT:
            raise InvalidState(f"the state must be a JSON object, not {json_kind(doc)}")
        return cls.from_members(pairs, doc if isinstance(doc, dict) else None)

    @classmethod
    def from_members(
        cls, pairs: list[tuple[str, Any]], document: dict[str, Any] | None = None
    ) -> StateDoc:
        """The facts of a state whose top-level object has ``pairs``, in document order.

        Nested values may be placeholders for what they are (an object, an array):
        only the top-level scalars are read. ``document`` is the whole parsed
        document when the caller kept it. The streaming reader
        (``terraform/statestream.py``) calls this with the members it read.
        """
        top = document if document is not None else {k: v for k, v in pairs}
        encrypted = "encryption_version" in top or "encrypted_data" in top
        if encrypted:
            if not isinstance(top.get("encrypted_data"), str):
                raise InvalidState("the OpenTofu encrypted state has no 'encrypted_data' string")
            version: int | None = None
            serial = top.get("serial", 0)
            lineage = top.get("lineage", "")
            tf_version = None
        else:
            version = _format_version(_decoded(pairs, "version", _whole_version, None))
            largest = MAX_SERIAL if version == 4 else _MAX_LEGACY_SERIAL
            # Go leaves a field at its zero value when it is absent or null.
            serial = _decoded(pairs, "serial", lambda v: _whole(v, "serial", largest), 0)
            lineage = _decoded(pairs, "lineage", _string_lineage, "")
            tf_version = _decoded(pairs, "terraform_version", _terraform_version, None)
            if version == 4:
                _check_containers(pairs)
        if encrypted:
            serial = 0 if serial is None else _whole(serial, "serial", MAX_SERIAL)
            if lineage is None:
                lineage = ""
            if not isinstance(lineage, str):
                lineage = _string_lineage(lineage)
        return cls(
            serial=serial,
            lineage=lineage,
            format_version=version,
            terraform_version=tf_version,
            encrypted=encrypted,
            document=top if document is not None else _scalars(top),
        )


def _whole_version(value: Any) -> int:
    return _whole(value, "version", MAX_SERIAL)


def _string_lineage(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidState(f"the state's 'lineage' is {json_kind(value)}; it must be a string")
    return value


def _format_version(value: Any) -> int:
    if value is _MISSING or value is None:
        raise InvalidState(
            "the body is not a Terraform state: it needs a 'version' number "
            "(format 4 today) or an OpenTofu 'encryption_version' envelope"
        )
    version = _whole_version(value)
    if version not in _SUPPORTED_FORMATS:
        raise InvalidState(
            f"the state uses format version {version}, which is not supported "
            "(Terraform reads formats 1 to 4; Terraform and OpenTofu write format 4)"
        )
    return version


def _terraform_version(value: Any) -> str | None:
    if value is _MISSING or value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidState(
            f"the state's 'terraform_version' is {json_kind(value)}; it must be a string"
        )
    match = _GO_VERSION.fullmatch(value)
    # go-version also reads each release segment as an int64.
    if match is None or any(int(s) > _MAX_LEGACY_SERIAL for s in match.group(1).split(".")):
        raise InvalidState(
            f"the state's 'terraform_version' {value!r} is not a version Terraform can read "
            "(e.g. '1.15.0'); Terraform refuses such a state with 'Invalid Terraform version "
            "string'"
        )
    return value


def _check_containers(pairs: list[tuple[str, Any]]) -> None:
    """Format 4's collections must have their JSON types (null reads as empty)."""
    for name, kind in (("outputs", "an object"), ("resources", "an array")):
        value = _member(pairs, name)
        if value is _MISSING or value is None or json_kind(value) == kind:
            continue
        raise InvalidState(f"the state's {name!r} is {json_kind(value)}; it must be {kind}")
    checks = _member(pairs, "check_results")
    if checks is not _MISSING and checks is not None and json_kind(checks) != "an array":
        raise InvalidState(
            f"the state's 'check_results' is {json_kind(checks)}; it must be an array"
        )


def _scalars(top: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in top.items() if not isinstance(v, Nested | list)}
