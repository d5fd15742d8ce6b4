"""The current version of each state as this process last read or wrote it.

A Terraform write comes right after its read (LOCK, GET, POST, UNLOCK), so the
facts the write rules check against (serial, lineage, SHA-256) are usually the
ones the GET just returned. On S3 a HEAD per write costs a round trip, on SQLite
a read transaction (and the version's metadata decoded again); with this, a
write checks against the remembered version and puts on condition that it is
still current (``If-Match`` on its ETag; SQLite compares the version ID inside
the write's own transaction). A version changed meanwhile (another replica, the
CLI) fails that condition, and the write is checked again against a fresh HEAD:
the memory may save a request, never decide an answer. Only versions with
statekeeper's metadata are remembered, and only a store with compare-and-swap
uses them (``StateService``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from statekeeper.state.version import StateVersion
from statekeeper.storage.base import ObjectInfo

__all__ = ["KnownVersions"]

#: The fields a write's checks need from the current version.
_NEEDED = frozenset({"sha256", "serial", "lineage"})


class KnownVersions:
    """A bounded map of state key -> the version last seen current by this process."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._known: OrderedDict[str, ObjectInfo] = OrderedDict()
        self._guard = threading.Lock()

    def remember(self, key: str, info: ObjectInfo) -> None:
        """``info`` is current now (just read or written)."""
        fields = StateVersion.metadata_fields(dict(info.metadata))
        if not fields.keys() >= _NEEDED:
            self.forget(key)
            return
        with self._guard:
            self._known[key] = info
            self._known.move_to_end(key)
            while len(self._known) > self.size:
                self._known.popitem(last=False)

    def get(self, key: str) -> ObjectInfo | None:
        with self._guard:
            return self._known.get(key)

    def forget(self, key: str) -> None:
        with self._guard:
            self._known.pop(key, None)
