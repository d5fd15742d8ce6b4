"""A waiting LOCK stops waiting after ``LONGEST`` times ``lock_wait`` even while the line
moves: a line of waiters ahead of it, served slower than that, cannot keep a client
waiting without an answer for ever. ``LockWaits`` on its own event loop, driven the way
the server drives it: a release (``released``, then ``taken`` by the waiter it was
handed to) every ``lock_wait`` / 2, and waiters ahead that retry, keeping their places,
when their own waits end."""

from __future__ import annotations

import asyncio

from statekeeper.server.lockwait import LONGEST, LockWaits

NAME = "team/app.tfstate"
WAIT = 0.1
AHEAD = 40  # one served per release: 2 s for all of them, beyond LONGEST * WAIT
#: The last LOCK queues this long after the others, so that its cap never coincides with theirs.
LATER = 0.3


async def _line_outlasting_the_cap() -> tuple[float, int, int]:
    """How long the last LOCK waited, how many LOCKs were still ahead of it when its
    wait ended, and how many releases it saw."""
    waits = LockWaits(WAIT)
    waits.taken(NAME, "holder")
    ids = [f"w{i}" for i in range(AHEAD)]
    for lock_id in [*ids, "last"]:
        waits.refused(NAME, lock_id, "holder")  # their first tries got 423; these are retries
    turns = {lock_id: asyncio.create_task(waits.turn(NAME, lock_id)) for lock_id in ids}
    loop = asyncio.get_running_loop()
    start_last = loop.time() + LATER
    last: asyncio.Task[None] | None = None
    served: set[str] = set()
    releases = 0
    while last is None or not last.done():
        await asyncio.sleep(WAIT / 2)
        if last is None and loop.time() >= start_last:
            started = loop.time()
            last = asyncio.create_task(waits.turn(NAME, "last"))
            releases = 0
        for lock_id, task in turns.items():
            if task.done() and lock_id not in served:  # its wait ran out: it retries
                turns[lock_id] = asyncio.create_task(waits.turn(NAME, lock_id))
        await asyncio.sleep(0)
        before = {lock_id for lock_id, task in turns.items() if task.done()}
        waits.released(NAME)
        releases += 1
        await asyncio.sleep(0)
        handed = {lock_id for lock_id, task in turns.items() if task.done()} - before
        for lock_id in handed:
            served.add(lock_id)
            waits.taken(NAME, lock_id)
    waited = loop.time() - started
    ahead = sum(lock_id not in served for lock_id in ids)
    for task in turns.values():
        task.cancel()
    await asyncio.gather(*turns.values(), return_exceptions=True)
    return waited, ahead, releases


def test_a_lock_waiting_in_a_moving_line_is_answered_after_longest_times_lock_wait() -> None:
    waited, ahead, releases = asyncio.run(_line_outlasting_the_cap())
    # Not handed the state before its cap (that would have ended its wait sooner)...
    assert LONGEST * WAIT <= waited < LONGEST * WAIT + 0.5, waited
    # The line moved all along (a wait without a release would have ended after WAIT)...
    assert releases >= LONGEST
    # ...and answered at the cap, before its turn came.
    assert ahead > 0
