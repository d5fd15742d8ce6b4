"""The server log's writer: the event loop's lines written a batch at a time, and
none lost when the server stops."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import threading
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

    def messages(self) -> list[str]:
        return [json.loads(line)["message"] for line in self.getvalue().splitlines()]


@pytest.fixture
def writer() -> Iterator[tuple[logging.Logger, LineWriter, _Stream]]:
    stream = _Stream()
    handler = LineWriter(stream, linger=0.05)
    handler.setFormatter(JsonFormatter())
    logger = logging.Logger("statekeeper.test-writer", logging.DEBUG)
    logger.addHandler(handler)
    yield logger, handler, stream
    handler.close()


def test_the_loops_lines_are_written_together_in_order(
    writer: tuple[logging.Logger, LineWriter, _Stream],
) -> None:
    logger, _, stream = writer

    async def answer() -> None:
        for n in range(50):
            logger.info("line %d", n)
            await asyncio.sleep(0)  # other requests' turns
        assert stream.writes == []  # held: no write on the loop per line
        await asyncio.sleep(0.2)

    asyncio.run(answer())
    assert len(stream.writes) == 1
    assert stream.messages() == [f"line {n}" for n in range(50)]


def test_lines_off_the_loop_and_warnings_are_written_at_once_after_the_held_ones(
    writer: tuple[logging.Logger, LineWriter, _Stream],
) -> None:
    logger, _, stream = writer

    async def answer() -> None:
        logger.info("held")
        thread = threading.Thread(target=logger.info, args=("from a worker thread",))
        thread.start()
        thread.join()
        assert stream.messages() == ["held", "from a worker thread"]
        logger.info("held again")
        logger.warning("trouble")
        assert stream.messages()[2:] == ["held again", "trouble"]

    asyncio.run(answer())
    logger.info("no loop")  # a command, the delivery worker: at once
    assert stream.messages()[4:] == ["no loop"]


def test_a_batch_is_written_at_once_when_it_reaches_the_limit(
    writer: tuple[logging.Logger, LineWriter, _Stream],
) -> None:
    logger, _, stream = writer

    async def answer() -> None:
        for n in range(LineWriter.LIMIT + 1):
            logger.info("line %d", n)
        # The held lines are bounded: the first LIMIT went out together, the next waits.
        assert len(stream.writes) == 1
        assert len(stream.messages()) == LineWriter.LIMIT
        await asyncio.sleep(0.2)

    asyncio.run(answer())
    assert len(stream.messages()) == LineWriter.LIMIT + 1


def test_flush_writes_what_is_held(writer: tuple[logging.Logger, LineWriter, _Stream]) -> None:
    logger, handler, stream = writer

    async def answer() -> None:
        logger.info("one")
        logger.info("two")
        handler.flush()  # logging.shutdown at exit, or SIGTERM
        assert stream.messages() == ["one", "two"]

    asyncio.run(answer())


def test_a_loop_gone_before_its_write_leaves_no_line_behind(
    writer: tuple[logging.Logger, LineWriter, _Stream],
) -> None:
    logger, _, stream = writer

    async def log(message: str, wait: float) -> None:
        logger.info(message)
        await asyncio.sleep(wait)

    asyncio.run(log("the first loop's", 0))  # closed before its batch was due
    asyncio.run(log("the next loop's", 0.2))
    assert stream.messages() == ["the first loop's", "the next loop's"]


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
    # At once: the last requests' lines are still held when the signal arrives.
    server.stop()
    assert server.proc.returncode == -signal.SIGTERM  # still ended by the signal
    lines = [json.loads(ln) for ln in server.log().splitlines() if ln.startswith("{")]
    logged = [line["request_id"] for line in lines if line["logger"] == "statekeeper.access"]
    assert sorted(logged) == sorted(ids)
    # uvicorn's last words, logged after the last request's, are there too.
    assert lines[-1]["message"].startswith("Finished server process")
