"""Server logs: text on a terminal, JSON lines for machines, a request ID on every line.

``log_format = "json"`` writes one JSON object a line: ``time``, ``level``,
``logger``, ``message``, the ``request_id`` of the request being answered (on
every line logged while answering it, the services' included), and the fields
the access line and the event line add. ``text`` is uvicorn's format; ``auto`` (the default)
picks text when standard error is a terminal and JSON otherwise.

One line per request: the event a request causes (its write, its lock) rides
on the request's access line as its ``event`` field (:class:`RequestLog`)
instead of a line of its own. An event outside a request (a CLI command, a
lease expired by the sweeper), or a request's second event, has its own line
on ``statekeeper.events`` (:func:`log_event`).

What reaches a log line is chosen, never dumped: the access line names the
method, path, route, state, caller, status and duration, and nothing of the
headers (credentials) or the body (state content).
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from statekeeper.events import Event, in_operation

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

__all__ = [
    "REQUEST",
    "JsonFormatter",
    "Line",
    "LineWriter",
    "RequestLog",
    "apart_from_request",
    "event_line",
    "flush_at_termination",
    "json_line",
    "lean_records",
    "log_config",
    "log_event",
    "resolve_format",
    "write_direct",
]

events_log = logging.getLogger("statekeeper.events")

#: Guards the hand-over of an event to a request's access line: the event is
#: emitted on a worker thread, the line written on the event loop's.
_CARRYING = threading.Lock()


class RequestLog:
    """The request being answered, as its log lines see it: its ID, and the event
    its access line will carry."""

    __slots__ = ("event", "id", "open")

    def __init__(self, request_id: str) -> None:
        self.id = request_id
        self.event: Event | None = None
        self.open = True

    def carry(self, event: Event) -> bool:
        """Take ``event`` for the access line; False when the line is written already
        (an operation that outlived its request's timeout) or carries another event."""
        with _CARRYING:
            if not self.open or self.event is not None:
                return False
            self.event = event
            return True

    def close(self) -> Event | None:
        """The access line is being written: the event it carries; later ones get lines
        of their own."""
        with _CARRYING:
            self.open = False
            return self.event


#: The request being answered (set by the access middleware), seen by every line
#: logged while answering it, on the worker threads too (contexts are copied there).
REQUEST: ContextVar[RequestLog | None] = ContextVar("statekeeper_request", default=None)


@contextmanager
def apart_from_request() -> Iterator[None]:
    """Log what happens inside as no request's: events emitted while answering a
    request that are not about it (another caller's refusals, counted and closed now)
    get lines of their own, without the request's ID."""
    token = REQUEST.set(None)
    try:
        yield
    finally:
        REQUEST.reset(token)


def resolve_format(setting: str) -> str:
    """``text`` or ``json`` for a ``log_format`` setting (``auto`` looks at stderr)."""
    if setting == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return setting


#: The last second formatted, and its text: lines come many a second, and only the
#: milliseconds change between them (one formatting of the date a second, not a line).
_SECOND: tuple[int, str] = (-1, "")


@functools.cache
def _millis() -> tuple[str, ...]:
    """``.000Z`` to ``.999Z``: a line's milliseconds are looked up, not formatted (a
    fifth of the time). Made for the first line: a command's start-up does without."""
    return tuple(f".{n:03d}Z" for n in range(1000))


def _time(created: float) -> str:
    global _SECOND
    # Rounded to the microsecond first, as datetime does: 44.001 is 44.000999… in binary.
    second = int(created)
    micros = round((created - second) * 1_000_000)
    if micros == 1_000_000:
        second, micros = second + 1, 0
    if _SECOND[0] != second:
        _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return _SECOND[1] + _millis()[micros // 1000]


class _LevelNames(dict[int, str]):
    """``info`` for ``logging.INFO``: a held line's level, named by a lookup."""

    def __missing__(self, level: int) -> str:
        name = self[level] = logging.getLevelName(level).lower()
        return name


_LEVEL_NAMES = _LevelNames()


def json_line(level: str, logger: str, message: str) -> str:
    """A log line in the JSON format, for what is printed before logging is set up."""
    out = {"time": _time(time.time()), "level": level, "logger": logger, "message": message}
    return _encode(out)


#: The encoder of what orjson refuses (one for every line: ``json.dumps`` with options
#: builds a new one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


def _encode(out: dict[str, Any]) -> str:
    """A line's JSON: compact, UTF-8 as is, anything else as its ``str``.

    orjson encodes an access line's fields (its event is already text, spliced in
    by :class:`LineWriter`) in a tenth of the time ``json`` takes, on the event
    loop's thread, once per request.
    What it refuses (an integer past 64 bits, a lone surrogate) the standard
    encoder writes as before.
    """
    try:
        return orjson.dumps(out, default=str).decode()
    except TypeError:  # orjson.JSONEncodeError
        return _ENCODER.encode(out)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={"fields": {...}}`` adds top-level fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = REQUEST.get()
        if request is not None:
            out["request_id"] = request.id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return _encode(out)


class TextFormatter(logging.Formatter):
    """uvicorn's ``LEVEL:     message``, with the logger's name for statekeeper's own."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"{record.levelname}:".ljust(10)
        name = "" if record.name.startswith(("uvicorn", "statekeeper.access")) else record.name
        line = f"{prefix}{name + ': ' if name else ''}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class LineWriter(logging.StreamHandler):  # type: ignore[type-arg]
    """Standard error's handler: the event loop's lines written a batch at a time.

    Each line written as it is logged is a ``write`` on the event loop's thread per
    request, which lets go of the GIL: on a busy server a request's worker thread
    takes it, and the loop waits to have it back. Lines logged on a running event
    loop (the access lines) are held instead, and written together ``linger``
    seconds after the first of them, by the loop (one ``write`` for the batch); an
    access line is held as its facts (:func:`write_direct`) and formatted then, with
    the rest of its batch. A tenth of a second by default: a write (and its flush)
    per batch is a fixed cost, five times less of it a second than at 20 ms, and
    a line a tenth of a second late is still seen as it happens.
    Lines logged elsewhere (a worker thread, a command), and any WARNING or worse,
    are written at once, after the lines held before them. :meth:`flush`, which
    ``logging.shutdown`` calls at exit (and :func:`flush_at_termination` at
    SIGTERM), writes what is held: a graceful stop loses no line.
    """

    #: Lines held at most: past it the batch is written at once.
    LIMIT = 512

    def __init__(self, stream: Any = None, linger: float = 0.1) -> None:
        super().__init__(stream)
        self.linger = linger
        self._held: list[str | _Deferred] = []
        self._loop: AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock (Handler.handle).
        try:
            line = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 - logging's contract: a bad record is reported
            self.handleError(record)
            return
        self._take(line, record.levelno)

    def hold(self, line: _Deferred, level: int) -> None:
        """A line's facts (:func:`write_direct`), formatted when the batch is written."""
        with self.lock:  # type: ignore[union-attr]
            self._take(line, level)

    def _take(self, line: str | _Deferred, level: int) -> None:
        # Under the handler's lock. Without importing asyncio (a command's start-up does
        # not need it): a process that has not imported it runs no event loop.
        aio = sys.modules.get("asyncio")
        loop: AbstractEventLoop | None = aio._get_running_loop() if aio else None
        held = self._held
        held.append(line)
        if loop is None or level >= logging.WARNING or len(held) >= self.LIMIT:
            self.flush()
        elif self._loop is not loop:  # the batch's first line: its write is due later
            self._loop = loop
            loop.call_later(self.linger, self.flush)

    def flush(self) -> None:
        """Write the lines held."""
        with self.lock:  # type: ignore[union-attr]
            self._loop = None
            if not self._held:
                return
            text = "".join([x if isinstance(x, str) else self._render(x) for x in self._held])
            self._held.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # stderr gone: nowhere left to say it
                pass

    def _render(self, held: _Deferred) -> str:
        """A held line's text, as :class:`JsonFormatter` or :class:`TextFormatter` writes it."""
        created, level, name, request_id, line = held
        try:
            message = line.message()
            fields = line.fields()
            event = line.event
        except Exception as exc:  # noqa: BLE001 - one bad line must not take its batch
            level, fields, event = logging.ERROR, {}, None
            message = f"a line could not be formatted ({type(exc).__name__})"
        if type(self.formatter) is not JsonFormatter:
            return f"{logging.getLevelName(level) + ':':<10}{message}\n"
        out: dict[str, Any] = {
            "time": _time(created),
            "level": _LEVEL_NAMES[level],
            "logger": name,
            "message": message,
        }
        if request_id is not None:
            out["request_id"] = request_id
        out.update(fields)
        text = _encode(out)
        if event is not None:
            # The event's JSON as the audit trail stored it (docs/events.md), whole: spliced
            # in as the last field, not encoded again.
            text = f'{text[:-1]},"event":{event.json_text()}}}'
        return text + "\n"


def _sole_writer(logger: logging.Logger, level: int) -> LineWriter | None:
    """The :class:`LineWriter` that alone would write ``logger``'s record at ``level``,
    with nothing else on the way to see the record: no filter, no other handler."""
    writer: LineWriter | None = None
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return None
        for handler in node.handlers:
            if writer is not None or type(handler) is not LineWriter:
                return None
            if handler.filters or level < handler.level:
                return None
            writer = handler
        node = node.parent if node.propagate else None
    return writer


class Line(Protocol):
    """A line as facts, made text when its batch is written (:func:`write_direct`):
    its message, its fields, and the event it carries (the JSON line's ``event``)."""

    @property
    def event(self) -> Event | None: ...

    def message(self) -> str: ...

    def fields(self) -> dict[str, Any]: ...


#: A held line: its time, level, logger, request ID and facts.
_Deferred = tuple[float, int, str, "str | None", Line]


def write_direct(logger: logging.Logger, level: int, line: Line) -> bool:
    """Hand ``logger``'s ``line`` at ``level`` to our :class:`LineWriter` without a log
    record, when the logging module would only pass the record to it, formatted by
    one of our formatters; False (nothing written) otherwise, for the caller to log.

    The access line is the one line of every request: the record (its object, the
    logger's, handler's and formatter's calls) cost several times the line's own
    text inside a busy server. The writer formats the line when it writes its batch,
    as the formatter would have, field for field; the caller has checked that
    ``level`` is enabled.
    """
    writer = _sole_writer(logger, level)
    if writer is None:
        return False
    formatter = type(writer.formatter)
    if formatter is TextFormatter and not logger.name.startswith("statekeeper.access"):
        return False  # the text format names other loggers: not this one's job
    if formatter is not JsonFormatter and formatter is not TextFormatter:
        return False
    request = REQUEST.get()
    held = (time.time(), level, logger.name, request.id if request is not None else None, line)
    writer.hold(held, level)
    return True


def flush_at_termination() -> None:
    """Write the held log lines when SIGTERM ends the process.

    uvicorn answers SIGTERM with a graceful shutdown, then raises the signal again
    for the handler it found, and Python's default one ends the process without
    ``atexit`` (where ``logging.shutdown`` writes what :class:`LineWriter` holds).
    This handler, installed before uvicorn's, writes the lines, then lets the
    signal end the process as before.
    """

    def terminate(signum: int, _frame: object) -> None:
        logging.shutdown()
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, terminate)


def lean_records() -> None:
    """Stop every log record of this process noting what no line of ours shows.

    A record looks up its caller's frame, file name, thread and process names
    by default: a third of what a line costs, for fields neither format
    prints. The server writes a line per request, so it turns them off
    (the knobs the logging HOWTO's "Optimization" names).
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def log_event(event: Event) -> None:
    """The server log's subscriber: the event of a request's operation rides on the
    request's access line; any other (outside a request, a side effect within an
    operation, a request's second) has a line of its own (:func:`event_line`)."""
    if not events_log.isEnabledFor(logging.INFO):
        return
    request = REQUEST.get()
    if request is not None and not in_operation() and request.carry(event):
        return
    event_line(event)


def event_line(event: Event) -> None:
    """One line for one event, at INFO on ``statekeeper.events``.

    The message is a short summary for people (``lock ok bench/a.tfstate by ci``);
    the event's fields ride along as the JSON line's own fields, encoded once
    with the line (the event's ``time`` as ``event_time``: the line has its own).
    """
    fields = event.to_json()
    fields["event_time"] = fields.pop("time")
    events_log.info(
        "%s %s %s by %s",
        fields["action"],
        event.outcome,
        event.state or "-",
        event.actor,
        extra={"fields": fields},
    )


def log_config(log_format: str, level: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` for uvicorn and statekeeper's loggers.

    uvicorn's own access log is off: statekeeper's access line replaces it.
    """
    formatter = JsonFormatter if resolve_format(log_format) == "json" else TextFormatter
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "()": f"{LineWriter.__module__}.{LineWriter.__qualname__}",
                "formatter": "line",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "statekeeper": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }
