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

The pieces: a kept version and the JSON reading at an offset
(:mod:`statekeeper.hooks.kept`), the version told from its bytes
(:mod:`statekeeper.hooks.samebytes`), the element-wise parse
(:mod:`statekeeper.hooks.reparse`); here, the index that keeps the versions.
"""

from __future__ import annotations

from collections.abc import Callable

from statekeeper.hooks.kept import EMPTY, Version, decoded
from statekeeper.hooks.reparse import Parser
from statekeeper.hooks.samebytes import same_resources

__all__ = ["ResourceIndex"]


class ResourceIndex:
    """The last version of up to ``states`` states, holding up to ``chars`` bytes of
    their documents in all."""

    def __init__(self, states: int = 16, chars: int = 64 << 20) -> None:
        self.states = states
        self.chars = chars
        self._kept: dict[str, Version] = {}
        #: Elements parsed, and versions whose whole text was read, by the last
        #: :meth:`changes` (the tests see the reuse).
        self.parsed = 0
        self.read_whole = 0

    def kept(self, state: str) -> str | None:
        """The ID of the version kept for ``state`` (its bytes need not be read again)."""
        version = self._kept.get(state)
        return None if version is None else version.id

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
        kept = self._kept.pop(state, None) or EMPTY
        before = EMPTY
        if previous is not None:
            # Not the kept one (a rollback, a version this worker never saw): read, and
            # parsed like the kept one, which it likely resembles.
            before = kept if kept.id == previous else self._read(previous, read, kept)
        after = self._read(version, read, before if before is not EMPTY else kept)
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

    def _read(self, version: str, read: Callable[[str], bytes | None], like: Version) -> Version:
        data = read(version)
        if data is None:
            return EMPTY
        if like.ascii and like.readable:
            same = same_resources(like, version, data)
            if same is not None:
                return same
        self.read_whole += 1
        parser = Parser(version, data, decoded(data), like if like.readable else EMPTY)
        parsed = parser.parse()
        self.parsed += parser.parsed
        return parsed

    def _keep(self, state: str, version: Version) -> None:
        if len(version.data) > self.chars:
            return
        self._kept[state] = version
        used = sum(len(v.data) for v in self._kept.values())
        while len(self._kept) > self.states or used > self.chars:
            oldest = next(iter(self._kept))
            used -= len(self._kept.pop(oldest).data)
