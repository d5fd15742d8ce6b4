"""The index's queue of changed states: written in the request, indexed in the background.

Re-indexing a state after a write means reading it back, parsing it and writing
its resources to the full-text index: about 5 ms of CPU for a 100 KB state, more
than the rest of the write. The index is derived data, so the request only
*names* the state here and returns; one thread indexes the named states.

- **Coalescing.** A state named again while it waits is still one entry: it is
  indexed once, from whatever version is current when its turn comes (a state
  written ten times while queued is read and parsed once). The thread waits up
  to ``delay`` after the first name before it starts, so that a burst of writes
  (Terraform writing a state several times during one apply) shares the work.
- **Read your writes.** An answer made from the index first calls
  :meth:`IndexQueue.settle`: it wakes the thread (no delay any more) and waits
  until every state named before the call has been indexed. A search sent after a
  write was answered therefore sees that write.
- **A crash loses nothing but time.** What was queued and not yet indexed is in
  the store; the catch-up a server runs when it opens the index compares each
  state's version with the indexed one and re-reads the ones that differ.
- **One thread, in order.** Only this thread indexes named states, so an older
  version can never overwrite a newer one's entries.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

from statekeeper.errors import StatekeeperError

__all__ = ["IndexQueue"]

log = logging.getLogger("statekeeper.inventory")


class IndexQueue:
    """States waiting to be re-indexed by ``index`` (called with a state's name)."""

    def __init__(self, index: Callable[[str], None], delay: float = 0.0) -> None:
        self._index = index
        self.delay = delay
        self._cond = threading.Condition()
        #: Names waiting, in the order first named (a dict as an ordered set).
        self._pending: dict[str, None] = {}
        #: Sequence numbers: of the last name added, and up to which every name is indexed.
        self._added = 0
        self._done = 0
        #: Callers of settle() waiting: the thread skips its coalescing delay for them.
        self._waiting = 0
        self._closing = False
        self._thread: threading.Thread | None = None
        #: States indexed since the queue was made (each coalesced burst counts once).
        self.indexed = 0

    def add(self, name: str) -> None:
        """Name a state to re-index; returns at once."""
        with self._cond:
            if self._closing:
                return  # the index is closing: the next catch-up sees this version
            first = not self._pending
            self._pending[name] = None
            self._added += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="inventory-index", daemon=True
                )
                self._thread.start()
            if first:
                # Only an empty queue has the thread waiting for a name; while names
                # gather it waits for its delay (or settle()), not for more of them.
                self._cond.notify_all()

    def pending(self) -> int:
        """States named and not yet taken up for indexing."""
        with self._cond:
            return len(self._pending)

    def settle(self, timeout: float = 30.0) -> bool:
        """Wait until every state named before this call is indexed; False if ``timeout``
        passed first (then the answer is made from what is indexed)."""
        with self._cond:
            target = self._added
            if self._done >= target:
                return True
            self._waiting += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._done >= target, timeout)
            finally:
                self._waiting -= 1

    def close(self) -> None:
        """Index what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _take(self) -> tuple[list[str], int] | None:
        """The next batch and the sequence it covers; None once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._pending) or self._closing)
            if not self._pending:
                return None
            if self.delay > 0:
                # Let a burst of writes to the same states gather, unless someone waits.
                self._cond.wait_for(lambda: self._waiting > 0 or self._closing, self.delay)
            batch = list(self._pending)
            self._pending.clear()
            return batch, self._added

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            batch, upto = taken
            for name in batch:
                try:
                    self._index(name)
                except Exception as exc:  # derived data: logged, and caught up later
                    # Its old entry stays, with the old version's marker: the next
                    # catch-up sees the difference and reads the state again.
                    log.warning(
                        "the inventory could not index %s: %s",
                        name,
                        exc,
                        exc_info=not isinstance(exc, (StatekeeperError, sqlite3.Error)),
                    )
            with self._cond:
                self.indexed += len(batch)
                self._done = upto
                self._cond.notify_all()
