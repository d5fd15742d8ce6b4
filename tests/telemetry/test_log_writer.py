"""The server log's writer: lines queued where they are logged, written in batches,
and none lost when the server stops."""

from __future__ import annotations

import io
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from statekeeper.telemetry.logs import JsonFormatter, LineWriter
from statekeeper.testing.processes import StatekeeperServer


class _Stream(io.StringIO):
    """A stream that notes each ``write`` (the handler's syscall) it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def writer() -> Iterator[tuple[logging.Logger, LineWriter, _Stream]]:
    stream = _Stream()
    handler = LineWriter(stream, linger=0.2)
    handler.setFormatter(JsonFormatter())
    logger = logging.Logger("statekeeper.test-writer", logging.DEBUG)
    logger.addHandler(handler)
    yield logger, handler, stream
    handler.close()


def _wait(until: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "the writer did not write"
        time.sleep(0.01)


def test_lines_logged_together_are_written_at_once_in_order(
    writer: tuple[logging.Logger, LineWriter, _Stream],
) -> None:
    logger, _, stream = writer
    for n in range(50):
        logger.info("line %d", n)
    assert stream.writes == []  # queued, not written on the logging thread
    _wait(lambda: bool(stream.writes))
    assert len(stream.writes) == 1
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [f"line {n}" for n in range(50)]


def test_lines_from_several_threads_are_all_written(
    writer: tuple[logging.Logger, LineWriter, _Stream],
) -> None:
    logger, _, stream = writer

    def log(thread: int) -> None:
        for n in range(200):
            logger.info("%d-%d", thread, n)

    threads = [threading.Thread(target=log, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _wait(lambda: stream.getvalue().count("\n") == 800)
    messages = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    for t in range(4):
        assert [m for m in messages if m.startswith(f"{t}-")] == [f"{t}-{n}" for n in range(200)]


def test_a_warning_is_written_before_logging_returns_after_the_lines_before_it(
    writer: tuple[logging.Logger, LineWriter, _Stream],
) -> None:
    logger, _, stream = writer
    logger.info("before")
    logger.warning("trouble")
    messages = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert messages == ["before", "trouble"]


def test_flush_and_close_write_what_is_queued(
    writer: tuple[logging.Logger, LineWriter, _Stream],
) -> None:
    logger, handler, stream = writer
    logger.info("one")
    handler.flush()
    assert stream.getvalue().count("\n") == 1
    logger.info("two")
    handler.close()
    assert stream.getvalue().count("\n") == 2
    logger.info("after close")  # written at once: no writer is left to do it
    assert stream.getvalue().count("\n") == 3


def test_every_request_has_its_line_after_sigterm(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve("--log-level", "info", env={"STATEKEEPER_LOG_FORMAT": "json"})
    ids = [f"sigterm-{n}" for n in range(300)]

    def send(part: list[str]) -> None:
        with httpx.Client(timeout=30) as http:
            for request_id in part:
                url = server.state_url(f"team/{request_id}.tfstate")
                http.get(url, headers={"X-Request-ID": request_id})

    threads = [threading.Thread(target=send, args=(ids[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # At once: the last requests' lines are still queued when the signal arrives.
    server.stop()
    assert server.proc.returncode == -signal.SIGTERM  # still ended by the signal
    lines = [json.loads(ln) for ln in server.log().splitlines() if ln.startswith("{")]
    logged = [line["request_id"] for line in lines if line["logger"] == "statekeeper.access"]
    assert sorted(logged) == sorted(ids)
    # uvicorn's last words, logged after the last request, are there too.
    assert lines[-1]["message"].startswith("Finished server process")
