"""Reading request bodies within the configured limit (chunked bodies included)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import io
import queue
from collections.abc import AsyncIterator, Callable, Iterator

from starlette.requests import ClientDisconnect, Request

from statekeeper.errors import BadRequest, PayloadTooLarge
from statekeeper.settings import format_size

__all__ = ["BodyStream", "read_body", "single_header"]

#: A state body is handed to the worker thread in pieces of about this size, and
#: no more than a few pieces are held here.
PIECE = 1 << 20
#: Pieces received ahead of the thread that consumes them.
AHEAD = 2


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than the limit of {format_size(limit)} ({limit} bytes); "
        "raise max_body (STATEKEEPER_MAX_BODY) if states "
        "this large are expected"
    )


def single_header(request: Request, name: str) -> str | None:
    """The value of a header that must appear at most once; two are a 400.

    Two values of one header are read differently by different proxies and
    frameworks (first wins, last wins, joined), so none of them is trusted.
    """
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"the request carries {len(values)} {name} headers; send exactly one")
    return values[0] if values else None


def _check_declared(
    request: Request, limit: int, too_large: Callable[[int], PayloadTooLarge]
) -> int | None:
    """The declared Content-Length (``None`` for a chunked body), checked against ``limit``."""
    declared = single_header(request, "content-length")
    if declared is None:
        return None
    if not (declared.isascii() and declared.isdigit()):
        raise BadRequest(f"the Content-Length header {declared!r} is not a number")
    if int(declared) > limit:
        raise too_large(limit)
    return int(declared)


class BodyStream:
    """A request body for a worker thread: iterate it there, in pieces of about
    :data:`PIECE` bytes, received on the event loop.

    A declared Content-Length over ``limit`` is refused when the stream is made;
    an undeclared (chunked) body the moment it passes the limit, so no more than
    a piece is ever held for a body that is too large. A client that goes away
    mid-body ends the iteration with a 400 (nobody is left to read it): the
    consumer stores nothing.

    The loop receives the next pieces while the thread works on the last one
    (at most :data:`AHEAD` of them wait) and hands them over through a thread
    queue: a piece already received is taken without waking the loop and
    waiting for its answer (that round trip per piece, on a loaded machine,
    cost as much as receiving). :meth:`aclose` stops the receiving when the
    consumer stopped early.
    """

    def __init__(
        self,
        request: Request,
        limit: int,
        too_large: Callable[[int], PayloadTooLarge] = _too_large,
    ) -> None:
        self._declared = _check_declared(request, limit, too_large)
        self.limit = limit
        self._too_large = too_large
        self._source: AsyncIterator[bytes] = request.stream()
        self._size = 0
        self._ended = False
        # Pieces, then None at the end, or the exception that ended the body.
        self._ahead: queue.SimpleQueue[bytes | Exception | None] = queue.SimpleQueue()
        # Set (on the loop) when the thread took a piece while the loop waits for
        # room. Only then: waking the loop for nothing takes the GIL from the thread.
        self._room = asyncio.Event()
        self._waiting = False
        # Made on the loop (in the request's handler); iterated in a worker thread.
        self._loop = asyncio.get_running_loop()
        self._receiving: asyncio.Task[None] | None = None
        # The request's own context: started from a worker thread's call back into
        # the loop, whose context holds the service's open event, the receiving
        # task would resume the connection's reading in that context, and every
        # later request on the connection would inherit it and record no event.
        self._context = contextvars.copy_context()
        self._ready: list[bytes] = []
        self._failed: BadRequest | PayloadTooLarge | None = None

    async def _piece(self, to_end: bool = False) -> bytes:
        """The next piece, of about PIECE bytes; or the whole rest when ``to_end``."""
        # Joined once (a read of a large body is a whole piece already: no copy).
        pending: list[bytes] = []
        size = 0
        try:
            while to_end or size < PIECE:
                chunk = await self._source.__anext__()
                self._size += len(chunk)
                if self._size > self.limit:
                    raise self._too_large(self.limit)
                pending.append(chunk)
                size += len(chunk)
        except StopAsyncIteration:
            self._ended = True
        except ClientDisconnect:
            raise BadRequest(
                f"the client went away after {self._size} bytes of the body; nothing was written"
            ) from None
        return pending[0] if len(pending) == 1 else b"".join(pending)

    async def _receive(self) -> None:
        outcome: Exception | None = None
        try:
            while not self._ended:
                self._ahead.put(await self._piece())
                while self._ahead.qsize() >= AHEAD:
                    # Said, then looked at again: a piece taken before the thread
                    # could see it shows in the queue's size.
                    self._room.clear()
                    self._waiting = True
                    if self._ahead.qsize() >= AHEAD:
                        await self._room.wait()
                    self._waiting = False
        except (BadRequest, PayloadTooLarge) as exc:
            outcome = exc
        except BaseException:
            # Cancelled (the server stops) or broken: the thread must not wait forever.
            outcome = BadRequest("the body was not received to its end; nothing was written")
            raise
        finally:
            self._ahead.put(outcome)

    def _start(self) -> None:
        """Start receiving (on the loop)."""
        self._receiving = self._loop.create_task(self._receive(), context=self._context)

    async def prefetch(self) -> None:
        """Receive now, on the event loop, a body declared no larger than a piece;
        start receiving a larger one.

        The thread then takes a small body without a hop back to the loop (two
        round trips for the usual state, well under a piece). A refusal found
        while receiving is raised where the thread iterates, as when streamed.
        """
        if self._declared is None or self._declared > PIECE:
            self._start()
            return
        try:
            # To its end, even when it is exactly a piece: then it is :attr:`whole`.
            self._ready.append(await self._piece(to_end=True))
        except (BadRequest, PayloadTooLarge) as exc:
            self._failed = exc

    @property
    def whole(self) -> bool:
        """True when the iteration needs nothing more from the event loop: the body
        was received to its end (or its refusal found) by :meth:`prefetch`."""
        return self._receiving is None and (self._ended or self._failed is not None)

    def __iter__(self) -> Iterator[bytes]:
        while self._ready:
            if received := self._ready.pop(0):
                yield received
        if self._failed is not None:
            raise self._failed
        if self._receiving is None:
            if self._ended:
                return
            # Started on the loop: the pieces it receives are waited for below.
            self._loop.call_soon_threadsafe(self._start)
        while True:
            piece = self._ahead.get()
            if self._waiting:
                self._loop.call_soon_threadsafe(self._room.set)
            if piece is None:
                return
            if isinstance(piece, Exception):
                raise piece
            if piece:
                yield piece

    async def aclose(self) -> None:
        """Stop receiving (the consumer is done, or gave up part way)."""
        if self._receiving is not None and not self._receiving.done():
            self._receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiving


async def read_body(
    request: Request,
    limit: int,
    too_large: Callable[[int], PayloadTooLarge] = _too_large,
) -> bytes:
    """The whole body; 413 (from ``too_large``) as soon as it is known to exceed ``limit``."""
    _check_declared(request, limit, too_large)
    # BytesIO grows one buffer and hands it over without a copy; a list of
    # chunks and their join would hold the body twice at the end.
    buffer = io.BytesIO()
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        buffer.write(chunk)
    return buffer.getvalue()
