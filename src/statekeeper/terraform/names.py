"""State names: what a valid name is, checked once for the server, the CLI and the stores."""

from __future__ import annotations

import re
from dataclasses import dataclass

from statekeeper.errors import InvalidStateName
from statekeeper.patterns import END, literal, whole
from statekeeper.terraform.layout import (
    DIGEST_SUFFIX,
    LOCK_FILE_SUFFIX,
    RESERVED_PREFIXES,
    RESERVED_SUFFIXES,
    reserved_reason,
)

__all__ = ["MAX_NAME_BYTES", "NAME_CHARACTERS", "NAME_PATTERN", "NAME_RULES", "StateName"]

MAX_NAME_BYTES = 1024
#: The characters of a segment, as a regular expression's character class body.
NAME_CHARACTERS = r"A-Za-z0-9._:=+\-"
_SEGMENT = re.compile(f"[{NAME_CHARACTERS}]+")
NAME_RULES = (
    "a state name is one or more '/'-separated segments of letters, digits and "
    "'._:=+-', with no empty, '.' or '..' segment, at most 1024 bytes "
    "(for example 'team/app/prod.tfstate'), and not a name Terraform's S3 layout "
    f"derives for a lock file ('…{LOCK_FILE_SUFFIX}') or a digest ('…{DIGEST_SUFFIX}')"
)
# A segment that is not '.' or '..', then the rules of reserved_reason as lookaheads
# (the characters and MAX_NAME_BYTES make it ASCII: a JSON Schema maxLength says that).
_NAMED_SEGMENT = rf"(?!\.\.?(?:/|{END}))[{NAME_CHARACTERS}]+"
_RESERVED_END = "|".join(map(literal, RESERVED_SUFFIXES))
_RESERVED_START = "|".join(map(literal, RESERVED_PREFIXES))
#: :class:`StateName`'s rules as a JSON Schema pattern (:mod:`statekeeper.patterns`).
NAME_PATTERN = whole(
    rf"(?![\s\S]*(?:{_RESERVED_END}){END})(?!{_RESERVED_START})"
    rf"{_NAMED_SEGMENT}(?:/{_NAMED_SEGMENT})*"
)


@dataclass(frozen=True, order=True)
class StateName:
    """A validated state name; it is also the storage key under the store's prefix."""

    value: str

    def __post_init__(self) -> None:
        v = self.value
        if not v:
            raise InvalidStateName("the state name is empty; " + NAME_RULES)
        # surrogatepass: a command line's bytes that are no UTF-8 (lone surrogates) are
        # counted here and refused below as characters not allowed, not raised.
        size = len(v.encode("utf-8", "surrogatepass"))
        if size > MAX_NAME_BYTES:
            raise InvalidStateName(f"the state name is {size} bytes long; " + NAME_RULES)
        for segment in v.split("/"):
            if segment in ("", ".", ".."):
                raise InvalidStateName(
                    f"the state name {v!r} has an empty, '.' or '..' segment; " + NAME_RULES
                )
            if not _SEGMENT.fullmatch(segment):
                raise InvalidStateName(
                    f"the state name {v!r} has a character that is not allowed; " + NAME_RULES
                )
        reserved = reserved_reason(v)
        if reserved is not None:
            raise InvalidStateName(
                f"the state name {v!r} cannot be used: {reserved}; choose another name"
            )

    def __str__(self) -> str:
        return self.value
