"""A LOCK retried after a 423 waits, briefly, for this server to release the state.

Clients that retry LOCK on 423 without a pause (scripts, a CI fleet started at
once) would otherwise make the server answer conflicts as fast as it can while
the holder's own requests queue behind them: at 64 such clients the holder got
one request in 64. The first LOCK under an ID gets its 423 at once (Terraform
without ``-lock-timeout`` reports the holder without delay); a retry under the
same ID waits. A waiting LOCK costs nothing while it waits (a future on the
event loop, no thread, no store call, no event), and the holder's UNLOCK hands
the lock to the longest waiter at once, first come first served.

Only a lock taken through this server is waited for (the view of it here is
kept from this server's own LOCKs and UNLOCKs), and the lock table stays the
judge: a woken LOCK takes the lock through it like any other, and may still get
423 (a client that was not waiting took it first). A release by another
replica, the CLI or an expiry is not seen here; a waiter then tries when its
wait (``lock_wait`` seconds) ends, and gets the lock or the 423 it would have
had at once. A LOCK is one attempt, and one event, whatever it waited.

A line of waiters can outlast ``lock_wait``: 64 clients on one state, each
section taking more than ``lock_wait`` / 63. Its waiters are not answered 423
while the line moves: a LOCK waits for ``lock_wait`` without a release of the
state here (each release starts its wait again), at most :data:`LONGEST` times
``lock_wait`` in all. Answered when the line had moved, each waiter would come
back at once for another wait, every round one more 423, one more store call and
one more event for the holder's server to make, on the cores its holder needs.
And a LOCK whose wait did end without the lock keeps its place: its retry (same
ID) queues where it first queued, not behind the LOCKs that came after it.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import OrderedDict

__all__ = ["LockWaits"]

#: Refused LOCKs remembered (a retry of one of them waits); the oldest are forgotten.
_REMEMBERED = 10_000
#: A LOCK waits at most this many times ``lock_wait``, however the line moves.
LONGEST = 10


class LockWaits:
    """Locks taken through this server, and the LOCKs waiting for their release."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        #: State name -> the ID it was locked under through this server, until unlocked here.
        self._held: dict[str, str] = {}
        #: State name -> its waiting LOCKs as (place, lock ID, waiter), by place.
        self._queues: dict[str, list[tuple[int, str, asyncio.Future[None]]]] = {}
        #: State name -> the waiting LOCK it was handed to, until that LOCK ends.
        self._handed: dict[str, str] = {}
        #: (name, lock ID) of LOCKs answered 423, oldest first: only a retry waits.
        self._refused: OrderedDict[tuple[str, str], None] = OrderedDict()
        #: (name, lock ID) -> its place in the queue since it first queued, oldest first.
        self._places: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._next_place = itertools.count()
        #: State name -> how many times it was released here while LOCKs waited for it.
        self._moves: dict[str, int] = {}

    def waiting(self, name: str) -> int:
        """How many LOCKs wait for ``name`` now."""
        return sum(not f.done() for _, _, f in self._queues.get(name, ()))

    async def turn(self, name: str, lock_id: str) -> None:
        """Return when a LOCK of ``name`` under ``lock_id`` should try the lock table:
        at once unless this server holds ``name`` under another ID; then when this
        server releases it to this LOCK, or after ``seconds`` without a release of
        ``name`` here (:data:`LONGEST` times ``seconds`` at most)."""
        held = self._held.get(name)
        if self.seconds <= 0 or held is None or held == lock_id:
            return
        if (name, lock_id) not in self._refused and self._handed.get(name) != held:
            return  # a first try gets its answer at once, unless the lock is being handed on
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (self._place(name, lock_id), lock_id, waiter)
        bisect.insort(self._queues.setdefault(name, []), entry, key=_place_of)
        latest = loop.time() + LONGEST * self.seconds
        try:
            while (left := latest - loop.time()) > 0:
                moves = self._moves.get(name, 0)
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), min(self.seconds, left))
                    return
                except TimeoutError:
                    if self._moves.get(name, 0) == moves:
                        return  # not released here meanwhile: the holder keeps it
        finally:
            if not waiter.done():
                waiter.cancel()
            self._forget(name)

    def taken(self, name: str, lock_id: str) -> None:
        """A LOCK through this server took ``name``."""
        self._held[name] = lock_id
        self._handed.pop(name, None)
        self._refused.pop((name, lock_id), None)
        self._places.pop((name, lock_id), None)

    def refused(self, name: str, lock_id: str, holder_id: str) -> None:
        """A LOCK under ``lock_id`` met ``holder_id``. When this server did not take
        that lock, its release will not be seen here, and LOCKs must not wait for it."""
        if self._held.get(name) != holder_id:
            self._held.pop(name, None)
        if self._handed.get(name) == lock_id:
            del self._handed[name]
        self._refused[(name, lock_id)] = None
        self._refused.move_to_end((name, lock_id))
        while len(self._refused) > _REMEMBERED:
            self._refused.popitem(last=False)

    def abandoned(self, name: str, lock_id: str) -> None:
        """A LOCK under ``lock_id`` ended without the lock (refused, failed, or its
        client gone): if ``name`` was handed to it, hand it to the next waiter."""
        if self._handed.get(name) == lock_id:
            self.released(name)

    def released(self, name: str) -> None:
        """``name`` was unlocked here: hand it to its longest waiter, whose LOCK then
        goes first (a LOCK arriving meanwhile queues behind it); the others keep waiting."""
        self._held.pop(name, None)
        self._handed.pop(name, None)
        queue = self._queues.get(name)
        if queue:
            self._moves[name] = self._moves.get(name, 0) + 1
        while queue:
            _, lock_id, waiter = queue.pop(0)
            if not waiter.done():
                self._held[name] = self._handed[name] = lock_id
                waiter.set_result(None)
                return

    def _place(self, name: str, lock_id: str) -> int:
        """The place of a LOCK in ``name``'s queue: where it first queued, if it did."""
        place = self._places.get((name, lock_id))
        if place is None:
            place = self._places[(name, lock_id)] = next(self._next_place)
            while len(self._places) > _REMEMBERED:
                self._places.popitem(last=False)
        return place

    def _forget(self, name: str) -> None:
        queue = self._queues.get(name)
        if queue is not None:
            queue[:] = [entry for entry in queue if not entry[2].done()]
            if not queue:
                del self._queues[name]
                self._moves.pop(name, None)


def _place_of(entry: tuple[int, str, asyncio.Future[None]]) -> int:
    return entry[0]
