"""The resources a ``state.written`` delivery reports: which instances the new version
added, changed and removed, parsing only what changed since the version before.

A write usually changes a few resources of many, and the worker saw the version
before it moments ago (it was the previous write's new version). The worker
keeps, for the last version of a few states, its text and, for each element of
its ``resources`` array, where the element lies in the text and the instances
parsed from it. The next version is read as text and compared with the kept
one: an element of the new text whose characters are those of a kept element
(found through the common prefix of the two arrays and the common suffix of the
two documents, two memory compares) parses to the same instances, so it is not
parsed again, and its instances are the kept objects themselves (comparing them
is an identity check). Only the elements between the first and the last
difference are parsed.

The answer is the one a full parse gives: the same JSON parser (the standard
library's, element by element), the same instance addresses
(:func:`statekeeper.state.diff.instance_objects`) and the same comparison of
(attributes, status). A version never seen, a rollback or a lineage change is
parsed in full (the kept version is matched by its ID, never by its content).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any

from statekeeper.state.diff import attributes_of, instance_objects, status_of

__all__ = ["ResourceIndex"]

#: One instance: its address and (attributes, status), compared to tell a change.
_Pair = tuple[str, tuple[Any, str | None]]
#: JSON's whitespace, as the standard library's parser skips it.
_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: The standard library's scanner (C): one JSON value at a given index.
_SCAN: Callable[[str, int], tuple[Any, int]] = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Version:
    """One version's text and the instances of each element of its resources array."""

    id: str
    text: str
    #: Where each element starts and ends in ``text`` (end: one past its last char).
    starts: list[int]
    ends: list[int]
    #: Each element's instances, in the order a full parse meets them.
    elements: list[list[_Pair]]
    #: Where the elements begin (after ``[``); -1 when the document has no array there.
    opened: int
    #: False for an OpenTofu encrypted state: its resources cannot be read.
    readable: bool

    def instances(self) -> dict[str, tuple[Any, str | None]]:
        return {address: value for pairs in self.elements for address, value in pairs}


_EMPTY = _Version("", "", [], [], [], -1, True)


def _skip(text: str, at: int) -> int:
    end: int = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
    return end


def _value(text: str, at: int) -> tuple[Any, int]:
    try:
        value, end = _SCAN(text, at)
    except StopIteration as exc:
        raise ValueError(f"no JSON value at {at}") from exc
    return value, end


def _element_pairs(value: Any) -> list[_Pair]:
    """The instances of one element of ``resources``, as a full parse lists them."""
    return [
        (address, (attributes_of(inst), status_of(inst)))
        for address, inst in instance_objects({"resources": [value]})
    ]


class _Parser:
    """Reads one document's top level, parsing its resources array element by element
    and taking the elements it shares with ``old`` from there."""

    def __init__(self, version: str, text: str, old: _Version) -> None:
        self.version, self.text, self.old = version, text, old
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.elements: list[list[_Pair]] = []
        self.opened = -1
        self.parsed = 0  # elements parsed, not taken from ``old`` (for the tests)

    def parse(self) -> _Version:
        text, keys = self.text, set()
        at = _skip(text, 0)
        if text[at : at + 1] != "{":
            raise ValueError("the state is not a JSON object")
        at = _skip(text, at + 1)
        while text[at : at + 1] != "}":
            key, at = _value(text, at)
            if not isinstance(key, str):
                raise ValueError(f"a key expected at {at}")
            at = _skip(text, at)
            if text[at : at + 1] != ":":
                raise ValueError(f"':' expected at {at}")
            at = _skip(text, at + 1)
            keys.add(key)
            at = self._resources(at) if key == "resources" else _value(text, at)[1]
            at = _skip(text, at)
            if text[at : at + 1] == ",":
                at = _skip(text, at + 1)
            elif text[at : at + 1] != "}":
                raise ValueError(f"',' or '}}' expected at {at}")
        if _skip(text, at + 1) != len(text):
            raise ValueError(f"extra data after the state's object at {at + 1}")
        readable = not ({"encrypted_data", "encryption_version"} & keys)
        return _Version(
            self.version, text, self.starts, self.ends, self.elements, self.opened, readable
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


class ResourceIndex:
    """The last version of up to ``states`` states, holding up to ``chars`` characters
    of their texts in all."""

    def __init__(self, states: int = 16, chars: int = 64 << 20) -> None:
        self.states = states
        self.chars = chars
        self._kept: dict[str, _Version] = {}
        #: Elements parsed by the last :meth:`changes` (the tests see the reuse).
        self.parsed = 0

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
        self.parsed = 0
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
        # Decoded as json.loads decodes bytes.
        text = data.decode(json.detect_encoding(data), "surrogatepass")
        parser = _Parser(version, text, like if like.readable else _EMPTY)
        parsed = parser.parse()
        self.parsed += parser.parsed
        return parsed

    def _keep(self, state: str, version: _Version) -> None:
        if len(version.text) > self.chars:
            return
        self._kept[state] = version
        used = sum(len(v.text) for v in self._kept.values())
        while len(self._kept) > self.states or used > self.chars:
            oldest = next(iter(self._kept))
            used -= len(self._kept.pop(oldest).text)
