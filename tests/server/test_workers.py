"""The worker threads Terraform's requests hop to (server/workers.py)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest
from tfwire import Api, lock_body, state_bytes

from statekeeper.server.body import PIECE
from statekeeper.server.workers import LOCAL_THREADS, REMOTE_THREADS, Workers, threads_for

WHO = contextvars.ContextVar[str]("WHO")


def test_the_function_runs_in_a_worker_thread_in_the_callers_context() -> None:
    workers = Workers(2)

    async def call() -> tuple[str, str]:
        WHO.set("request 7")
        return await workers.run(lambda: (WHO.get(), threading.current_thread().name))

    try:
        who, thread = asyncio.run(call())
    finally:
        workers.close()
    assert who == "request 7"
    assert thread == "statekeeper-worker"


def test_the_functions_exception_is_raised_to_the_caller() -> None:
    workers = Workers(2)
    failure = LookupError("no such row")

    def fail() -> None:
        raise failure

    async def call() -> None:
        await workers.run(fail)

    try:
        with pytest.raises(LookupError) as raised:
            asyncio.run(call())
    finally:
        workers.close()
    assert raised.value is failure


def test_no_more_than_threads_run_at_once_and_the_rest_wait_their_turn() -> None:
    workers = Workers(3)
    guard = threading.Lock()
    running, most, started = 0, 0, []

    def job(n: int) -> int:
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
            started.append(n)
        time.sleep(0.02)
        with guard:
            running -= 1
        return n

    async def call() -> list[int]:
        return await asyncio.gather(*(workers.run(lambda n=n: job(n)) for n in range(12)))

    try:
        results = asyncio.run(call())
    finally:
        workers.close()
    assert results == list(range(12))
    assert most == 3
    assert set(started[:3]) == {0, 1, 2}  # the others waited for a thread


def test_a_cancelled_caller_stops_waiting_and_the_function_still_ends() -> None:
    workers = Workers(1)
    release, ended = threading.Event(), threading.Event()

    def slow() -> str:
        release.wait(5)
        ended.set()
        return "late"

    async def call() -> str:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await workers.run(slow)
        release.set()
        # The one thread is free again once the abandoned call has ended.
        return await workers.run(lambda: "next")

    try:
        assert asyncio.run(call()) == "next"
    finally:
        workers.close()
    assert ended.is_set()


def test_idle_threads_end_and_busy_moments_start_them_again() -> None:
    workers = Workers(2, idle_seconds=0.1)

    def names() -> set[str]:
        return {t.name for t in threading.enumerate() if t.name == "statekeeper-worker"}

    async def call() -> None:
        await asyncio.gather(workers.run(lambda: time.sleep(0.05)), workers.run(lambda: None))

    try:
        asyncio.run(call())
        deadline = time.monotonic() + 5
        while names() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not names()
        asyncio.run(call())
    finally:
        workers.close()


def test_stores_on_this_machine_get_few_threads_and_network_stores_many() -> None:
    assert threads_for("sqlite:///tmp/a.db", "sqlite:///tmp/a.db") == LOCAL_THREADS
    assert threads_for("memory://x", "memory://x") == LOCAL_THREADS
    assert threads_for("s3://bucket/prefix", "dynamodb://table") == REMOTE_THREADS
    assert threads_for("sqlite:///tmp/a.db", "dynamodb://table") == REMOTE_THREADS


def test_a_state_of_exactly_one_piece_is_received_from_the_worker_thread(api: Api) -> None:
    # The prefetch on the loop stops at one piece without seeing the body's end; the
    # worker thread then has the rest (none) received on the loop, without anyio.
    empty = state_bytes(1, outputs={"blob": {"value": "", "type": "string"}})
    data = state_bytes(1, outputs={"blob": {"value": "x" * (PIECE - len(empty)), "type": "string"}})
    assert len(data) == PIECE
    lock = lock_body("piece")
    assert api.lock(lock).status_code == 200
    assert api.write(data, lock_id="piece").status_code == 200
    got = api.get()
    assert got.status_code == 200
    assert got.content == data
