"""A version of a state as the resource index keeps it, and the JSON reading at an offset
that the index's parses share.

A kept version holds its bytes, where each member of its object lies and, for each
element of its ``resources`` array, where the element lies in the text and the
instances parsed from it (:mod:`statekeeper.hooks.resources` says what for). The
reading functions take one JSON value, key or run of whitespace at a given offset of
the text, with the standard library's scanner: the same parser as ``json.loads``,
member by member and element by element.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from json.scanner import make_scanner
from typing import Any

__all__ = [
    "EMPTY",
    "ENCRYPTED",
    "Member",
    "Pair",
    "Version",
    "decoded",
    "moved",
    "read_member",
    "read_members",
    "read_value",
    "skip_space",
]

#: One instance: its address and (attributes, status), compared to tell a change.
Pair = tuple[str, tuple[Any, str | None]]
#: One member of the document's object: its key, where the key starts, where it ends.
Member = tuple[str, int, int]
#: The keys of an OpenTofu encrypted state.
ENCRYPTED = frozenset({"encrypted_data", "encryption_version"})
#: JSON's whitespace, as the standard library's parser skips it.
_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: The standard library's scanner (C): one JSON value at a given index.
_SCAN: Callable[[str, int], tuple[Any, int]] = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


@dataclass(frozen=True)
class Version:
    """One version's bytes and the instances of each element of its resources array."""

    id: str
    data: bytes
    #: Where each element starts and ends in ``text`` (end: one past its last char).
    starts: list[int]
    ends: list[int]
    #: Each element's instances, in the order a full parse meets them.
    elements: list[list[Pair]]
    #: Where the elements begin (after ``[``); -1 when the document has no array there.
    opened: int
    #: False for an OpenTofu encrypted state: its resources cannot be read.
    readable: bool
    #: The object's members in order: (key, where the key starts, where the ``,`` or
    #: ``}`` after the value is).
    members: list[Member]
    #: UTF-8 of ASCII characters only: an offset in ``text`` is one in ``data``.
    ascii: bool

    @cached_property
    def text(self) -> str:
        return decoded(self.data)

    def instances(self) -> dict[str, tuple[Any, str | None]]:
        return {address: value for pairs in self.elements for address, value in pairs}


EMPTY = Version("", b"", [], [], [], -1, True, [], False)


def decoded(data: bytes) -> str:
    """The text of a version, decoded as json.loads decodes bytes."""
    return data.decode(json.detect_encoding(data), "surrogatepass")


def skip_space(text: str, at: int) -> int:
    end: int = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
    return end


def read_value(text: str, at: int) -> tuple[Any, int]:
    try:
        value, end = _SCAN(text, at)
    except StopIteration as exc:
        raise ValueError(f"no JSON value at {at}") from exc
    return value, end


def read_member(text: str, at: int) -> tuple[str, int]:
    """The key of the object member at ``at``, and where its value starts."""
    key, at = read_value(text, at)
    if not isinstance(key, str):
        raise ValueError(f"a key expected at {at}")
    at = skip_space(text, at)
    if text[at : at + 1] != ":":
        raise ValueError(f"':' expected at {at}")
    return key, skip_space(text, at + 1)


def moved(offsets: list[int], by: int) -> list[int]:
    return [o + by for o in offsets] if by else offsets


def read_members(text: str, offset: int) -> list[Member] | None:
    """``text`` read as members of an object, separated by ``,``, the last one's value
    (and whitespace) ending where ``text`` ends; None when it is not that."""
    members: list[Member] = []
    at = 0
    try:
        while True:
            start = at
            key, at = read_member(text, at)
            at = skip_space(text, read_value(text, at)[1])
            members.append((key, offset + start, offset + at))
            if at == len(text):
                return members
            if text[at] != ",":
                return None
            at = skip_space(text, at + 1)
    except ValueError:
        return None
