"""The element-wise parse of a version's ``resources``: the elements it shares with the
kept version are taken from there, the others parsed.

An element of the new text whose characters are those of a kept element (found
through the common prefix of the two arrays and the common suffix of the two
documents) parses to the same instances, so it is not parsed again, and its
instances are the kept objects themselves (comparing them is an identity check).
Only the elements between the first and the last difference are parsed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from statekeeper.hooks.kept import (
    ENCRYPTED,
    Pair,
    Version,
    moved,
    read_member,
    read_value,
    skip_space,
)
from statekeeper.state.diff import attributes_of, instance_objects, status_of

__all__ = ["Parser"]


def _element_pairs(value: Any) -> list[Pair]:
    """The instances of one element of ``resources``, as a full parse lists them."""
    return [
        (address, (attributes_of(inst), status_of(inst)))
        for address, inst in instance_objects({"resources": [value]})
    ]


class Parser:
    """Reads one document's top level, parsing its resources array element by element
    and taking the elements it shares with ``old`` from there."""

    def __init__(self, version: str, data: bytes, text: str, old: Version) -> None:
        self.version, self.data, self.text, self.old = version, data, text, old
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.elements: list[list[Pair]] = []
        self.opened = -1
        self.parsed = 0  # elements parsed, not taken from ``old`` (for the tests)

    def parse(self) -> Version:
        text, members = self.text, []
        at = skip_space(text, 0)
        if text[at : at + 1] != "{":
            raise ValueError("the state is not a JSON object")
        at = skip_space(text, at + 1)
        while text[at : at + 1] != "}":
            start = at
            key, at = read_member(text, at)
            at = self._resources(at) if key == "resources" else read_value(text, at)[1]
            at = skip_space(text, at)
            members.append((key, start, at))
            if text[at : at + 1] == ",":
                at = skip_space(text, at + 1)
            elif text[at : at + 1] != "}":
                raise ValueError(f"',' or '}}' expected at {at}")
        if skip_space(text, at + 1) != len(text):
            raise ValueError(f"extra data after the state's object at {at + 1}")
        # The text is not kept with the version (its bytes are): it is decoded again only
        # if the next version must be parsed, so the kept versions hold their bytes alone.
        return Version(
            self.version,
            self.data,
            self.starts,
            self.ends,
            self.elements,
            self.opened,
            not ENCRYPTED.intersection(key for key, _, _ in members),
            members,
            len(text) == len(self.data),  # UTF-8 (or 16, 32: longer) of ASCII only
        )

    def _resources(self, at: int) -> int:
        """Read the array at ``at`` (json.loads keeps the last of repeated keys: so does
        this); where it ends."""
        text = self.text
        self.starts, self.ends, self.elements = [], [], []
        if text[at : at + 1] != "[":
            _, end = read_value(text, at)  # not a list: no instances, as instance_objects says
            self.opened = -1
            return end
        at = self.opened = skip_space(text, at + 1)
        if text[at : at + 1] == "]":
            return at + 1
        old = self.old
        # Old elements whose text, and the character after it, lie in the beginning the
        # two arrays share: the same text at the same place from the array's start.
        shift = at - old.opened
        same = _common_prefix(old.text, old.opened, text, at) if old.opened >= 0 else 0
        n = bisect_right(old.ends, old.opened + same - 1) if old.opened >= 0 else 0
        if n:
            self.starts = moved(old.starts[:n], shift)
            self.ends = moved(old.ends[:n], shift)
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
                self.starts += moved(old.starts[i:], delta)
                self.ends += moved(old.ends[i:], delta)
                self.elements += old.elements[i:]
                at = self._next(self.ends[-1])
                if at < 0:
                    return -at
                raise ValueError("the resources array did not end where it did before")
            value, end = read_value(text, at)
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
        at = skip_space(text, end)
        if text[at : at + 1] == ",":
            return skip_space(text, at + 1)
        if text[at : at + 1] == "]":
            return -(at + 1)
        raise ValueError(f"',' or ']' expected at {at}")


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
