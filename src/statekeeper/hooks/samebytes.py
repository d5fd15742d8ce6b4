"""A version that changed no resource, told from the kept one by its bytes alone.

The bytes the two versions share at their start and their end are found by
memory compares; when what lies between spans whole members other than
``resources`` (the serial, the lineage, the outputs), those members alone are
parsed and the resources are the kept ones: the version is not decoded, not
walked.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from dataclasses import replace

from statekeeper.hooks.kept import ENCRYPTED, Version, moved, read_members

__all__ = ["same_end", "same_resources", "same_start"]


def same_start(a: bytes, b: bytes) -> int:
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


def same_end(a: bytes, b: bytes, floor: int) -> int:
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


def same_resources(old: Version, version: str, data: bytes) -> Version | None:
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
    same = same_start(base, data)
    if same < 4 and json.detect_encoding(data) != "utf-8":  # it reads the first four bytes
        return None
    delta = len(data) - len(base)
    end = len(base) - same_end(base, data, same)
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
    members = read_members(span.decode("ascii"), first)
    if members is None or any(key == "resources" for key, _, _ in members):
        return None
    after = [(key, start + delta, stop + delta) for key, start, stop in old.members[j + 1 :]]
    members = old.members[:i] + members + after
    shift = delta if old.opened > first else 0
    return Version(
        version,
        data,
        moved(old.starts, shift),
        moved(old.ends, shift),
        old.elements,
        old.opened + shift if old.opened >= 0 else -1,
        not ENCRYPTED.intersection(key for key, _, _ in members),
        members,
        True,
    )
