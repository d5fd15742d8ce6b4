"""The resources a ``state.written`` delivery reports: which instances the new version
added, changed and removed, parsing only what changed since the version before.

A write usually changes a few resources of many, and the worker saw the version
before it moments ago (it was the previous write's new version). The worker
keeps, for the last version of a few states, its bytes, the members of its
object (where each key and value lie) and, for each element of its
``resources`` array, where the element lies in the text and the instances
parsed from it.

The next version's bytes are compared with the kept ones first (the common
prefix and suffix of the two, two binary searches of memory compares). When
what differs lies in members other than ``resources`` (the serial, the outputs,
the lineage: a write that changed no resource), only those members are parsed,
and the resources are the kept ones: the version is not even decoded. Else it
is read as text and compared with the kept one: an element of the new text
whose characters are those of a kept element (found through the common prefix
of the two arrays and the common suffix of the two documents) parses to the
same instances, so it is not parsed again, and its instances are the kept
objects themselves (comparing them is an identity check). Only the elements
between the first and the last difference are parsed.

The answer is the one a full parse gives: the same JSON parser (the standard
library's, member by member and element by element), the same instance
addresses (:func:`statekeeper.state.diff.instance_objects`) and the same
comparison of (attributes, status). A version never seen, a rollback or a
lineage change is parsed in full (the kept version is matched by its ID, never
by its content).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from json.scanner import make_scanner
from typing import Any

from statekeeper.state.diff import attributes_of, instance_objects, status_of

__all__ = ["ResourceIndex"]

#: One instance: its address and (attributes, status), compared to tell a change.
_Pair = tuple[str, tuple[Any, str | None]]
#: One member of the document's object: its key, where the key starts, where it ends.
_Member = tuple[str, int, int]
#: The keys of an OpenTofu encrypted state.
_ENCRYPTED = frozenset({"encrypted_data", "encryption_version"})
#: JSON's whitespace, as the standard library's parser skips it.
_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: The standard library's scanner (C): one JSON value at a given index.
_SCAN: Callable[[str, int], tuple[Any, int]] = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Version:
    """One version's bytes and the instances of each element of its resources array."""

    id: str
    data: bytes
    #: Where each element starts and ends in ``text`` (end: one past its last char).
    starts: list[int]
    ends: list[int]
    #: Each element's instances, in the order a full parse meets them.
    elements: list[list[_Pair]]
    #: Where the elements begin (after ``[``); -1 when the document has no array there.
    opened: int
    #: False for an OpenTofu encrypted state: its resources cannot be read.
    readable: bool
    #: The object's members in order: (key, where the key starts, where the ``,`` or
    #: ``}`` after the value is).
    members: list[_Member]
    #: UTF-8 of ASCII characters only: an offset in ``text`` is one in ``data``.
    ascii: bool

    @cached_property
    def text(self) -> str:
        return _decoded(self.data)

    def instances(self) -> dict[str, tuple[Any, str | None]]:
        return {address: value for pairs in self.elements for address, value in pairs}


_EMPTY = _Version("", b"", [], [], [], -1, True, [], False)


def _decoded(data: bytes) -> str:
    """The text of a version, decoded as json.loads decodes bytes."""
    return data.decode(json.detect_encoding(data), "surrogatepass")


def _skip(text: str, at: int) -> int:
    end: int = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
    return end


def _value(text: str, at: int) -> tuple[Any, int]:
    try:
        value, end = _SCAN(text, at)
    except StopIteration as exc:
        raise ValueError(f"no JSON value at {at}") from exc
    return value, end


def _member(text: str, at: int) -> tuple[str, int]:
    """The key of the object member at ``at``, and where its value starts."""
    key, at = _value(text, at)
    if not isinstance(key, str):
        raise ValueError(f"a key expected at {at}")
    at = _skip(text, at)
    if text[at : at + 1] != ":":
        raise ValueError(f"':' expected at {at}")
    return key, _skip(text, at + 1)


def _element_pairs(value: Any) -> list[_Pair]:
    """The instances of one element of ``resources``, as a full parse lists them."""
    return [
        (address, (attributes_of(inst), status_of(inst)))
        for address, inst in instance_objects({"resources": [value]})
    ]


class _Parser:
    """Reads one document's top level, parsing its resources array element by element
    and taking the elements it shares with ``old`` from there."""

    def __init__(self, version: str, data: bytes, text: str, old: _Version) -> None:
        self.version, self.data, self.text, self.old = version, data, text, old
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.elements: list[list[_Pair]] = []
        self.opened = -1
        self.parsed = 0  # elements parsed, not taken from ``old`` (for the tests)

    def parse(self) -> _Version:
        text, members = self.text, []
        at = _skip(text, 0)
        if text[at : at + 1] != "{":
            raise ValueError("the state is not a JSON object")
        at = _skip(text, at + 1)
        while text[at : at + 1] != "}":
            start = at
            key, at = _member(text, at)
            at = self._resources(at) if key == "resources" else _value(text, at)[1]
            at = _skip(text, at)
            members.append((key, start, at))
            if text[at : at + 1] == ",":
                at = _skip(text, at + 1)
            elif text[at : at + 1] != "}":
                raise ValueError(f"',' or '}}' expected at {at}")
        if _skip(text, at + 1) != len(text):
            raise ValueError(f"extra data after the state's object at {at + 1}")
        # The text is not kept with the version (its bytes are): it is decoded again only
        # if the next version must be parsed, so the kept versions hold their bytes alone.
        return _Version(
            self.version,
            self.data,
            self.starts,
            self.ends,
            self.elements,
            self.opened,
            not _ENCRYPTED.intersection(key for key, _, _ in members),
            members,
            len(text) == len(self.data),  # UTF-8 (or 16, 32: longer) of ASCII only
        )

    def _resources(self, at: int) -> int:
        """Read the array at ``at`` (json.loads keeps the last of repeated keys: so does
        this); where it ends."""
        text = self.text
        self.starts, self.ends, self.elements = [], [], []
        if text[at : at + 1] != "[":
            _, end = _value(text, at)  # not a list: no instances, as instance_objects says
            self.opened = -1
            return end
        at = self.opened = _skip(text, at + 1)
        if text[at : at + 1] == "]":
            return at + 1
        old = self.old
        # Old elements whose text, and the character after it, lie in the beginning the
        # two arrays share: the same text at the same place from the array's start.
        shift = at - old.opened
        same = _common_prefix(old.text, old.opened, text, at) if old.opened >= 0 else 0
        n = bisect_right(old.ends, old.opened + same - 1) if old.opened >= 0 else 0
        if n:
            self.starts = _moved(old.starts[:n], shift)
            self.ends = _moved(old.ends[:n], shift)
            self.elements = old.elements[:n]
            at = self._next(self.ends[-1])
            if at < 0:
                return -at
        # The rest is parsed up to an old element in the end the two documents share:
        # from there the text is the old one's.
        delta = len(text) - len(old.text)
        tail = len(old.text) - _common_suffix(old.text, text, max(old.opened, at - delta, 0))
        while True:
            i = bisect_left(old.starts, at - delta)
            if at - delta >= tail and i < len(old.starts) and old.starts[i] == at - delta:
                self.starts += _moved(old.starts[i:], delta)
                self.ends += _moved(old.ends[i:], delta)
                self.elements += old.elements[i:]
                at = self._next(self.ends[-1])
                if at < 0:
                    return -at
                raise ValueError("the resources array did not end where it did before")
            value, end = _value(text, at)
            self.parsed += 1
            self.starts.append(at)
            self.ends.append(end)
            self.elements.append(_element_pairs(value))
            at = self._next(end)
            if at < 0:
                return -at

    def _next(self, end: int) -> int:
        """After an element ending at ``end``: the next one's start, or minus where the
        array ends."""
        text = self.text
        at = _skip(text, end)
        if text[at : at + 1] == ",":
            return _skip(text, at + 1)
        if text[at : at + 1] == "]":
            return -(at + 1)
        raise ValueError(f"',' or ']' expected at {at}")


def _moved(offsets: list[int], by: int) -> list[int]:
    return [o + by for o in offsets] if by else offsets


def _common_prefix(a: str, a0: int, b: str, b0: int) -> int:
    """How many characters ``a[a0:]`` and ``b[b0:]`` share from their start."""
    low, high = 0, min(len(a) - a0, len(b) - b0)
    while low < high:  # binary search: each step one memory compare
        mid = (low + high + 1) // 2
        if a[a0 + low : a0 + mid] == b[b0 + low : b0 + mid]:
            low = mid
        else:
            high = mid - 1
    return low


def _common_suffix(a: str, b: str, floor: int) -> int:
    """How many characters ``a`` and ``b`` share at their end (not reaching before
    ``floor`` in ``a``)."""
    low, high = 0, min(len(a) - floor, len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[len(a) - mid : len(a) - low] == b[len(b) - mid : len(b) - low]:
            low = mid
        else:
            high = mid - 1
    return low


def _same_start(a: bytes, b: bytes) -> int:
    """How many bytes ``a`` and ``b`` share from their start (the compares on views: no
    slice is copied)."""
    view = memoryview(a)
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if b.startswith(view[low:mid], low):
            low = mid
        else:
            high = mid - 1
    return low


def _same_end(a: bytes, b: bytes, floor: int) -> int:
    """How many bytes ``a`` and ``b`` share at their end, ``floor`` bytes of each left
    out at the start."""
    view = memoryview(b)
    shared, unshared = 0, min(len(a), len(b)) - floor + 1  # known to be, known not to be
    # Most writes change one place: the shared end is then nearly all that follows the
    # shared start. Lengths are tried down from there, a step twice the last each time,
    # each one compare, until one is shared...
    step = 1
    while unshared - step > shared:
        if a.endswith(view[len(b) - unshared + step :]):
            shared = unshared - step
            break
        unshared -= step
        step *= 2
    # ...then halved between, comparing only the bytes beyond the shared ones.
    while unshared - shared > 1:
        mid = (shared + unshared) // 2
        if a.endswith(view[len(b) - mid : len(b) - shared], 0, len(a) - shared):
            shared = mid
        else:
            unshared = mid
    return shared


def _same_resources(old: _Version, version: str, data: bytes) -> _Version | None:
    """``data`` read without parsing its resources, when it differs from ``old`` (ASCII)
    only in members other than ``resources``: those members are parsed, the rest is
    ``old``'s. None when that cannot be shown (the caller parses the version).

    The bytes the two share at their start and their end are the same text, parsed
    the same way; what lies between them (in ``old``) is spanned by whole members,
    ``old.members[i]`` to ``old.members[j]``, from the key of the first to the ``,``
    or ``}`` after the last. When the new bytes in that span are ASCII and parse as members, none of
    them ``resources``, ending where the span ends, the new document is ``old``'s
    with those members replaced: its resources are ``old``'s, at offsets moved by
    the difference in length.
    """
    base = old.data
    if base == data:
        return replace(old, id=version, data=data)
    same = _same_start(base, data)
    if same < 4 and json.detect_encoding(data) != "utf-8":  # it reads the first four bytes
        return None
    delta = len(data) - len(base)
    end = len(base) - _same_end(base, data, same)
    keys = [start for _, start, _ in old.members]
    i = bisect_right(keys, same) - 1  # the member the difference starts in (or after)
    j = bisect_left([stop for _, _, stop in old.members], end)  # and ends in
    if not 0 <= i <= j < len(old.members):
        return None
    if any(key == "resources" for key, _, _ in old.members[i : j + 1]):
        return None
    first, last = old.members[i][1], old.members[j][2] + delta
    span = data[first:last]
    if last <= first or not span.isascii():
        return None
    members = _members(span.decode("ascii"), first)
    if members is None or any(key == "resources" for key, _, _ in members):
        return None
    after = [(key, start + delta, stop + delta) for key, start, stop in old.members[j + 1 :]]
    members = old.members[:i] + members + after
    shift = delta if old.opened > first else 0
    return _Version(
        version,
        data,
        _moved(old.starts, shift),
        _moved(old.ends, shift),
        old.elements,
        old.opened + shift if old.opened >= 0 else -1,
        not _ENCRYPTED.intersection(key for key, _, _ in members),
        members,
        True,
    )


def _members(text: str, offset: int) -> list[_Member] | None:
    """``text`` read as members of an object, separated by ``,``, the last one's value
    (and whitespace) ending where ``text`` ends; None when it is not that."""
    members: list[_Member] = []
    at = 0
    try:
        while True:
            start = at
            key, at = _member(text, at)
            at = _skip(text, _value(text, at)[1])
            members.append((key, offset + start, offset + at))
            if at == len(text):
                return members
            if text[at] != ",":
                return None
            at = _skip(text, at + 1)
    except ValueError:
        return None


class ResourceIndex:
    """The last version of up to ``states`` states, holding up to ``chars`` bytes of
    their documents in all."""

    def __init__(self, states: int = 16, chars: int = 64 << 20) -> None:
        self.states = states
        self.chars = chars
        self._kept: dict[str, _Version] = {}
        #: Elements parsed, and versions whose whole text was read, by the last
        #: :meth:`changes` (the tests see the reuse).
        self.parsed = 0
        self.read_whole = 0

    def changes(
        self,
        state: str,
        previous: str | None,
        version: str,
        read: Callable[[str], bytes | None],
    ) -> dict[str, list[str]] | None:
        """The addresses ``version`` added, changed and removed against ``previous``
        (None: the state's first version), ``read`` giving a version's bytes (None when
        it is gone: no resources). None when either version is encrypted."""
        self.parsed = self.read_whole = 0
        kept = self._kept.pop(state, None) or _EMPTY
        before = _EMPTY
        if previous is not None:
            # Not the kept one (a rollback, a version this worker never saw): read, and
            # parsed like the kept one, which it likely resembles.
            before = kept if kept.id == previous else self._read(previous, read, kept)
        after = self._read(version, read, before if before is not _EMPTY else kept)
        self._keep(state, after)
        if not (before.readable and after.readable):
            return None
        if after.elements == before.elements:
            # Element for element the same objects (or equal ones): the same instances.
            return {"added": [], "changed": [], "removed": []}
        old, new = before.instances(), after.instances()
        # Addresses only: which attribute changed, and to what, is not the payload's to say.
        return {
            "added": sorted(set(new) - set(old)),
            "changed": [a for a in sorted(set(old) & set(new)) if old[a] != new[a]],
            "removed": sorted(set(old) - set(new)),
        }

    def _read(self, version: str, read: Callable[[str], bytes | None], like: _Version) -> _Version:
        data = read(version)
        if data is None:
            return _EMPTY
        if like.ascii and like.readable:
            same = _same_resources(like, version, data)
            if same is not None:
                return same
        self.read_whole += 1
        parser = _Parser(version, data, _decoded(data), like if like.readable else _EMPTY)
        parsed = parser.parse()
        self.parsed += parser.parsed
        return parsed

    def _keep(self, state: str, version: _Version) -> None:
        if len(version.data) > self.chars:
            return
        self._kept[state] = version
        used = sum(len(v.data) for v in self._kept.values())
        while len(self._kept) > self.states or used > self.chars:
            oldest = next(iter(self._kept))
            used -= len(self._kept.pop(oldest).data)
