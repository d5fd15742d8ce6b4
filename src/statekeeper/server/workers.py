"""Where Terraform's requests do their store work: a worker thread, one hop at most.

Every request on ``/state/`` and ``/lock/`` makes blocking store calls (SQLite and
its fsyncs, boto3), so it hands what blocks to a thread, once. anyio's pool (Starlette's
``run_in_threadpool``) costs the event loop more per hop than the store work of a
LOCK: a cancel scope, a limiter token, and a ``queue.Queue`` whose ``Condition``
wakes the worker in Python; at 8 clients that wake-up was a third of the loop's
time. Here an idle thread is handed its job directly (its own lock released, in
C), the most recently idle first, so that the few threads already running take
the work and the others stay asleep; with two cores and one GIL, more threads
running at once only contend for it. A write whose body is still arriving takes a
thread of another pool instead (:data:`UPLOAD_THREADS`): it waits on the client's pace.

The function runs in a copy of the caller's context (the request ID, the open
event), as with anyio. A caller that is cancelled (the request timed out) stops
waiting; its function still runs to its end, as a blocking call cannot be
interrupted, and its result is dropped.

On stores of this machine a request's work runs on the event loop's thread
instead (:meth:`Workers.run`), and only what would block the loop goes to a thread:
the fsync its commits end with, or all of a write of a new version, whose commit
syncs. That work holds the GIL anyway, and moving it between threads cost more than
it did: each SQLite call lets go of the GIL, and with the loop waiting for it on
the other core each let-go was a hand-over (bench/findings.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

__all__ = [
    "LOCAL_THREADS",
    "REMOTE_THREADS",
    "UPLOAD_THREADS",
    "Owed",
    "Workers",
    "local_stores",
    "threads_for",
]

T = TypeVar("T")

#: At most this many jobs run at once on a store on this machine (SQLite, memory):
#: a request's fsync, a write of a new version, or all of a request's work beside
#: a write still receiving its body; more wait their turn in order. Every thread
#: more that runs Python at once adds hand-overs of the GIL (a context switch each).
#: When all of a request's work hopped, 2 threads took 6 % less CPU a cycle than 4
#: at 8 clients, and 1 serialised the fsyncs and lost throughput; with the work on
#: the loop's thread, 1 to 4 were alike (bench/findings.md). A write still receiving
#: its body is not counted: it has a thread of another pool (:data:`UPLOAD_THREADS`).
LOCAL_THREADS = 2
#: On S3 and DynamoDB a request mostly waits for the network, without the GIL.
REMOTE_THREADS = 32
#: Writes still receiving their body (over 1 MiB, or chunked) have threads of their
#: own, this many at most: each mostly waits for the loop to receive the body, at the
#: client's pace, and holds up to ``storage.sqlite.pieces.IN_MEMORY`` of it in memory.
#: More wait their turn with their bodies unread (the client's sends wait too).
UPLOAD_THREADS = 8
#: A thread idle this long ends (the next busy moment starts it again).
IDLE_SECONDS = 10.0
#: When a client's request comes less than this after another client's, no request
#: is alone for this long (its fsync hops): with two clients or more, a request may
#: arrive at any time.
SHARED_SECONDS = 1.0

# The caller's loop and future, its context, and the function to run.
_Job = tuple[
    asyncio.AbstractEventLoop, "asyncio.Future[Any]", contextvars.Context, Callable[[], Any]
]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled and stopped waiting
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def local_stores(*urls: str) -> bool:
    """True when every store at ``urls`` is on this machine (SQLite, memory)."""
    return all(url.startswith(("sqlite:", "memory:")) for url in urls)


def threads_for(*urls: str) -> int:
    """The threads for stores at ``urls``: few when all are on this machine."""
    return LOCAL_THREADS if local_stores(*urls) else REMOTE_THREADS


class Owed(Protocol):
    """The blocking part of work done on the loop's thread, left for another thread
    (``storage.sqlite.database.OwedSyncs``: the fsyncs its commits owe)."""

    def __bool__(self) -> bool: ...

    def settle(self) -> None: ...


class _Slot:
    """An idle thread's mailbox: a job, and the lock released when it is there."""

    __slots__ = ("job", "ready")

    def __init__(self) -> None:
        self.job: _Job | None = None
        self.ready = threading.Lock()
        self.ready.acquire()


class _Pool:
    """Up to ``threads`` threads, started as needed, ended when idle; jobs beyond them
    wait their turn in order. ``settled`` is called on the job's loop with its end."""

    def __init__(
        self,
        threads: int,
        idle_seconds: float,
        settled: Callable[[asyncio.Future[Any], Any, BaseException | None], None],
    ) -> None:
        self.threads = threads
        self.idle_seconds = idle_seconds
        self.settled = settled
        self._guard = threading.Lock()
        self._idle: list[_Slot] = []
        self._backlog: collections.deque[_Job] = collections.deque()
        self._running = 0
        self._closed = False

    def submit(self, job: _Job) -> None:
        with self._guard:
            if self._idle:
                slot = self._idle.pop()
                slot.job = job
                slot.ready.release()
                return
            if self._running >= self.threads:
                self._backlog.append(job)
                return
            self._running += 1
        thread = threading.Thread(target=self._work, args=(job,), name="statekeeper-worker")
        thread.daemon = True  # an idle one must not hold the process open
        thread.start()

    def _work(self, job: _Job | None) -> None:
        slot = _Slot()
        while job is not None:
            loop, future, context, function = job
            job = None  # nothing of the request is kept while idle
            result: Any = None
            error: BaseException | None = None
            try:
                result = context.run(function)
            except BaseException as exc:  # noqa: BLE001 - the caller's to handle, whatever it is
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self.settled, future, result, error)
            del future, context, function, result, error
            job = self._next(slot)

    def _next(self, slot: _Slot) -> _Job | None:
        """The next job for this thread, or None when it should end."""
        with self._guard:
            if self._backlog:
                return self._backlog.popleft()
            if self._closed:
                self._running -= 1
                return None
            self._idle.append(slot)
        if not slot.ready.acquire(timeout=self.idle_seconds):
            with self._guard:
                if slot in self._idle:
                    self._idle.remove(slot)
                    self._running -= 1
                    return None
            slot.ready.acquire()  # a job was handed over as the wait ran out
        job, slot.job = slot.job, None
        return job

    def close(self) -> None:
        """End the idle threads now, and the busy ones when their job is done."""
        with self._guard:
            self._closed = True
            idle, self._idle = self._idle, []
            self._running -= len(idle)
        for slot in idle:
            slot.job = None
            slot.ready.release()


class Workers:
    """Up to ``threads`` worker threads for store work, started as needed, ended when
    idle, and up to :data:`UPLOAD_THREADS` more for writes still receiving their body.

    ``inline``: the stores are on this machine, and a request may do its work on the
    event loop's thread (:meth:`run`); ``owing()`` opens a block in which that work
    leaves what would block (its fsyncs) owed instead of doing it.
    """

    def __init__(
        self,
        threads: int,
        idle_seconds: float = IDLE_SECONDS,
        *,
        inline: bool = False,
        owing: Callable[[], AbstractContextManager[Owed]] | None = None,
        shared_seconds: float = SHARED_SECONDS,
    ) -> None:
        self.inline = inline
        self.owing = owing
        self.shared_seconds = shared_seconds
        self._store = _Pool(threads, idle_seconds, self._settled)
        self._uploads = _Pool(UPLOAD_THREADS, idle_seconds, self._settled)
        # These five are read and changed on the event loop's thread only.
        self._requests = 0  # requests being answered (:meth:`serving`)
        self._pending = 0  # jobs handed to a thread and not yet settled
        self._client: object = None  # the connection of the last request,
        self._heard_until = 0.0  # until when (time.monotonic()) it counts as there
        self._shared_until = 0.0  # all requests hop until then

    @contextlib.contextmanager
    def serving(self, client: object) -> Iterator[None]:
        """Around a request that may call :meth:`run` (on the event loop), from
        ``client`` (its connection's address and port)."""
        now = time.monotonic()
        if client != self._client:
            if now < self._heard_until:  # two clients within shared_seconds
                self._shared_until = now + self.shared_seconds
            self._client = client
        self._heard_until = now + self.shared_seconds
        self._requests += 1
        try:
            yield
        finally:
            self._requests -= 1

    async def run(
        self, function: Callable[[], T], *, waits_for_loop: bool = False, durable: bool = False
    ) -> T:
        """``function()``'s result or its exception: run on this thread, or in a worker
        thread. ``waits_for_loop``: the function waits for something the event loop
        does (a body still being received), so it must never block the loop's thread.
        ``durable``: it commits a write that is synced before anyone can read it (a
        new state version, a delete), so its commit waits for the disk.

        On stores of this machine, the work runs right here:
        - all of it when the request is alone: it comes from the only client the
          server has heard from for a while (:data:`SHARED_SECONDS`), is the only
          request being answered, and no work of another is left on the threads. The
          loop has nothing else to do meanwhile: one client's lock cycle is four
          requests in a row, and a hop there and back costs ~30 µs of latency, as
          much CPU and ~6 context switches.
        - otherwise, all but the fsync its commits end with, which is owed
          (``owing``) and made on a thread while the loop goes on reading and
          answering; concurrent requests share those fsyncs. A ``durable`` write,
          or one that waits for the loop, hops whole.

        At 8 clients the work on the loop's thread took 16 % less CPU a lock cycle
        than on the threads, for 19 % more cycles a second (bench/findings.md, "The
        store work on the loop's thread, beside other clients"): it holds the GIL
        anyway, and on a thread each of its SQLite calls let go of the GIL to the
        loop, waiting on the other core, and waited to get it back. Remote stores
        always hop: their calls wait on the network. Work on the loop's thread cannot
        be interrupted by the request timeout (nor can a thread's: the timeout only
        stops the waiting).
        """
        if self._alone(waits_for_loop):
            # Requests whose tasks are ready to run have not been counted yet: one
            # turn of the loop lets them start. Without it, at 8 clients each task
            # found itself alone in turn and each ran its fsyncs on the loop.
            await asyncio.sleep(0)
            if self._alone(waits_for_loop):
                return contextvars.copy_context().run(function)
        if self.inline and self.owing is not None and not (waits_for_loop or durable):
            return await self._owing(function, self.owing)
        # A write still receiving its body mostly waits for the loop, at the client's
        # pace: on a pool of its own, so that slow uploads hold none of the few threads
        # every other request's store work needs.
        return await self._hop(function, self._uploads if waits_for_loop else self._store)

    async def _owing(
        self, function: Callable[[], T], owing: Callable[[], AbstractContextManager[Owed]]
    ) -> T:
        """``function()`` here, then what it owes on a thread, even when it raised:
        an error's answer waits for the commits before it as a result's does."""
        owed: Owed | None = None
        try:
            with owing() as owed:
                return contextvars.copy_context().run(function)
        finally:
            # Out of the block: other requests' work runs on this thread meanwhile.
            if owed:
                await self._hop(owed.settle, self._store)

    async def _hop(self, function: Callable[[], T], pool: _Pool) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        pool.submit((loop, future, contextvars.copy_context(), function))
        self._pending += 1
        return await future

    def _alone(self, waits_for_loop: bool) -> bool:
        return (
            self.inline
            and not waits_for_loop
            and self._requests <= 1
            and not self._pending
            and time.monotonic() >= self._shared_until
        )

    def _settled(
        self, future: asyncio.Future[Any], result: Any, error: BaseException | None
    ) -> None:
        """A job's end, on the loop (even when its caller stopped waiting)."""
        self._pending -= 1
        _settle(future, result, error)

    def close(self) -> None:
        """End the idle threads now, and the busy ones when their job is done."""
        self._store.close()
        self._uploads.close()
