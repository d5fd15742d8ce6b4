"""Fixtures for access control tests."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@contextmanager
def pipe_written_once(pipe: Path, data: bytes) -> Iterator[None]:
    """``pipe`` made a FIFO that a writer fills with ``data`` once, as ``<(vault read …)``
    does: a second open for reading would wait for a writer forever. A writer still
    waiting at the end (nothing opened the pipe) is let go."""
    os.mkfifo(pipe)

    def write_once() -> None:
        try:
            with pipe.open("wb") as sent:  # waits for a reader to open it
                sent.write(data)
        except BrokenPipeError:
            pass  # let go below, unread: nothing opened it

    writer = threading.Thread(target=write_once, daemon=True)
    writer.start()
    try:
        yield
    finally:
        if writer.is_alive():
            os.close(os.open(pipe, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(10)
