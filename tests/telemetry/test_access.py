"""The access middleware's per-request work: request IDs, the line written without a
log record, and one ``send`` wrapper for statekeeper's layers."""

from __future__ import annotations

import asyncio
import gc
import inspect
import io
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from statekeeper.events import Action, Event
from statekeeper.server.errors import ErrorGuard
from statekeeper.server.limits import TimeoutMiddleware
from statekeeper.telemetry.access import (
    NOSNIFF,
    AccessLine,
    AccessMiddleware,
    Answer,
    new_request_id,
)
from statekeeper.telemetry.logs import (
    REQUEST,
    JsonFormatter,
    LineWriter,
    RequestLog,
    TextFormatter,
    write_direct,
)

_HEX32 = re.compile(r"[0-9a-f]{32}")


def test_generated_request_ids_are_32_hex_digits_and_never_repeat_across_threads() -> None:
    ids: list[str] = []

    def take() -> None:
        mine = [new_request_id() for _ in range(5000)]
        ids.extend(mine)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == len(ids) == 20_000
    assert all(_HEX32.fullmatch(i) for i in ids)


def test_a_forked_process_numbers_its_requests_under_a_prefix_of_its_own() -> None:
    parent = new_request_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ID, to the parent
        try:
            os.write(write, new_request_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert _HEX32.fullmatch(child)
    # The same prefix and count in the child would give it the parent's next ID.
    assert child[:16] != parent[:16]
    assert child != new_request_id()


@pytest.fixture
def access_log() -> Iterator[tuple[logging.Logger, io.StringIO, LineWriter]]:
    """``statekeeper.access`` writing to a buffer through our writer alone, as ``serve``
    configures it (each test sets it alone with :func:`_alone`: pytest attaches its
    capture to every logger that does not propagate, after the fixtures)."""
    logger = logging.getLogger("statekeeper.access")
    saved = (logger.handlers[:], logger.filters[:], logger.level, logger.propagate)
    buffer = io.StringIO()
    writer = LineWriter(buffer)
    writer.setFormatter(JsonFormatter())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, buffer, writer
    finally:
        logger.handlers, logger.filters, logger.level, logger.propagate = saved


def _alone(access_log: tuple[logging.Logger, io.StringIO, LineWriter]) -> None:
    logger, _, writer = access_log
    logger.handlers = [writer]


def _stack(inner: Any) -> AccessMiddleware:
    """The server's front layers (server/app.py) around ``inner``."""
    return AccessMiddleware(ErrorGuard(TimeoutMiddleware(inner, seconds=5)), lambda: [], None)


def _get(app: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            response = await client.get("/state/team/a.tfstate", headers=headers)
        logging.getLogger("statekeeper.access").handlers[0].flush()
        return response

    return asyncio.run(call())


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})


def test_the_access_line_is_written_without_a_log_record_when_our_writer_alone_sees_it(
    access_log: tuple[logging.Logger, io.StringIO, LineWriter],
) -> None:
    _alone(access_log)
    logger, buffer, _ = access_log
    made: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record.name)
        return record

    logging.setLogRecordFactory(counting)
    try:
        _get(_stack(_ok), {"X-Request-ID": "direct-1"})
        # Anything else that wants the record (a filter, a test's capture) gets one.
        logger.addFilter(lambda record: True)
        _get(_stack(_ok), {"X-Request-ID": "record-1"})
    finally:
        logging.setLogRecordFactory(factory)
    assert made == ["statekeeper.access"]
    direct, recorded = (json.loads(line) for line in buffer.getvalue().splitlines())
    # Field for field what the formatter writes, in the same order.
    assert list(direct) == list(recorded)
    assert direct["request_id"] == "direct-1" and recorded["request_id"] == "record-1"
    assert '"GET /state/team/a.tfstate HTTP/1.1" 200 ' in direct["message"]
    for line in (direct, recorded):
        del line["time"], line["duration_ms"], line["message"], line["request_id"]
    assert direct == recorded


class _Facts:
    def __init__(self, message: str, fields: dict[str, Any], event: Event | None = None) -> None:
        self._message, self._fields, self.event = message, fields, event

    def message(self) -> str:
        return self._message

    def fields(self) -> dict[str, Any]:
        return dict(self._fields)


def _as_record(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> str:
    record = logger.makeRecord(logger.name, level, "", 0, "%s", (message,), None)
    record.fields = fields
    return logger.handlers[0].format(record)


@pytest.mark.parametrize("formatter", [JsonFormatter, TextFormatter])
@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_a_direct_line_is_the_formatters_line(
    access_log: tuple[logging.Logger, io.StringIO, LineWriter],
    formatter: type[logging.Formatter],
    level: int,
) -> None:
    _alone(access_log)
    logger, buffer, writer = access_log
    writer.setFormatter(formatter())
    logger.setLevel(logging.DEBUG)
    fields = {"caller": "ci", "state": "team/ü.tfstate", "status": 200}
    event = Event(Action.WRITE, "ci", state="team/ü.tfstate", detail="ü")
    token = REQUEST.set(RequestLog("req-7"))
    try:
        assert write_direct(logger, level, _Facts('x - "GET /" 200 caller=ci', fields, event))
        # The formatter's line carries the event as the access middleware logs it then.
        with_event = {**fields, "event": event.json_view()}
        expected = _as_record(logger, level, 'x - "GET /" 200 caller=ci', with_event)
    finally:
        REQUEST.reset(token)
    writer.flush()
    written = buffer.getvalue().removesuffix("\n")
    if formatter is JsonFormatter:
        assert {**json.loads(written), "time": ""} == {**json.loads(expected), "time": ""}
        assert list(json.loads(written)) == list(json.loads(expected))
    else:
        assert written == expected


def test_a_writer_that_would_not_take_the_level_leaves_the_line_to_logging(
    access_log: tuple[logging.Logger, io.StringIO, LineWriter],
) -> None:
    _alone(access_log)
    logger, buffer, writer = access_log
    writer.setLevel(logging.WARNING)
    assert not write_direct(logger, logging.INFO, _Facts("quiet", {}))
    other = logging.getLogger("statekeeper.access.other")
    writer.setLevel(logging.NOTSET)
    logger.addHandler(logging.StreamHandler(io.StringIO()))
    assert not write_direct(other, logging.INFO, _Facts("two handlers", {}))
    assert buffer.getvalue() == ""


def test_statekeepers_layers_share_one_send_wrapper(
    access_log: tuple[logging.Logger, io.StringIO, LineWriter],
) -> None:
    _alone(access_log)
    seen: list[tuple[Scope, Send]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((scope, send))
        await _ok(scope, receive, send)

    response = _get(_stack(app), {"X-Request-ID": "one-wrapper"})
    assert response.headers["x-request-id"] == "one-wrapper"
    ((scope, send),) = seen
    # The access middleware's own (it adds the ID and nosniff): the guard and the
    # timeout did not wrap it again.
    nonlocals = inspect.getclosurevars(send).nonlocals
    assert nonlocals["headers"] == [(b"x-request-id", b"one-wrapper"), NOSNIFF]
    # What the layers share through the scope holds nothing of the server's: the
    # server's send belongs to an object holding the scope, and a cycle through the
    # two would keep each request alive until the garbage collector's next pass.
    answer = scope["statekeeper.answer"]
    assert isinstance(answer, Answer)
    assert all(isinstance(x, int | type) for x in gc.get_referents(answer))
    line = json.loads(access_log[1].getvalue())
    assert (line["status"], line["response_bytes"]) == (200, 4)


def test_the_guards_500_and_the_timeouts_503_are_seen_by_the_access_line(
    access_log: tuple[logging.Logger, io.StringIO, LineWriter],
) -> None:
    _alone(access_log)

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("a bug")

    async def stuck(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.sleep(30)

    async def cut(scope: Scope, receive: Receive, send: Send) -> None:
        message: Message = {"type": "http.response.start", "status": 200, "headers": []}
        await send(message)
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise KeyError("a bug after the answer started")

    assert _get(_stack(broken), {"X-Request-ID": "guard"}).headers["x-request-id"] == "guard"
    slow = AccessMiddleware(ErrorGuard(TimeoutMiddleware(stuck, seconds=0.1)), lambda: [], None)
    timed_out = _get(slow, {"X-Request-ID": "late"})
    assert (timed_out.status_code, timed_out.headers["x-request-id"]) == (503, "late")
    started = _get(_stack(cut), {"X-Request-ID": "cut"})
    assert (started.status_code, started.content) == (200, b"part")
    lines = [json.loads(line) for line in access_log[1].getvalue().splitlines()]
    assert [(line["request_id"], line["status"]) for line in lines] == [
        ("guard", 500),
        ("late", 503),
        ("cut", 200),
    ]


def test_a_line_held_on_the_event_loop_is_formatted_with_its_batch(
    access_log: tuple[logging.Logger, io.StringIO, LineWriter],
) -> None:
    _alone(access_log)
    logger, buffer, writer = access_log
    formatted: list[str] = []

    class Counted(_Facts):
        def message(self) -> str:
            formatted.append(self._message)
            return self._message

    async def answer() -> None:
        for n in range(3):
            assert write_direct(logger, logging.INFO, Counted(f"line {n}", {"n": n}))
        # Held as facts: nothing formatted or written until the batch is.
        assert (formatted, buffer.getvalue()) == ([], "")
        await asyncio.sleep(writer.linger * 3)
        assert formatted == ["line 0", "line 1", "line 2"]

    asyncio.run(answer())
    assert [json.loads(line)["n"] for line in buffer.getvalue().splitlines()] == [0, 1, 2]


@pytest.mark.parametrize(
    ("seconds", "in_message", "duration_ms"),
    [
        (0.0042, "4.2ms", 4.2),
        (0.0123456, "12.3ms", 12.35),
        (0.0, "0.0ms", 0.0),
        (2.5, "2500.0ms", 2500.0),
    ],
)
def test_an_access_line_names_its_duration_and_its_event(
    seconds: float, in_message: str, duration_ms: float
) -> None:
    event = Event(Action.WRITE, "ci", state="team/app.tfstate", serial=4)
    line = AccessLine(
        ("10.0.3.7", 40526),
        "ci",
        "POST",
        "/state/team/app.tfstate",
        "1.1",
        "/state/{name}",
        "team/app.tfstate",
        200,
        seconds,
        0,
        "req-42",
        event,
    )
    assert line.message() == (
        f'10.0.3.7:40526 - "POST /state/team/app.tfstate HTTP/1.1" 200 {in_message} '
        "caller=ci request_id=req-42 event=write:ok"
    )
    assert line.fields()["duration_ms"] == duration_ms
    stream = io.StringIO()
    writer = LineWriter(stream)
    writer.setFormatter(JsonFormatter())
    writer.hold((0.0, logging.INFO, "statekeeper.access", None, line), logging.INFO)
    rendered = json.loads(stream.getvalue())
    assert rendered["duration_ms"] == duration_ms
    # The event as the audit trail stores it, whole, as the line's last field.
    assert list(rendered)[-1] == "event" and rendered["event"] == event.json_view()
    assert rendered["event"]["action"] == "write" and rendered["event"]["serial"] == 4
