"""The worker threads Terraform's requests hop to, and when they do not (server/workers.py)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from base64 import b64encode
from collections.abc import AsyncIterator
from pathlib import Path

import boto3
import httpx
import pytest
from tfwire import Api, lock_body, md5_header, state_bytes

from statekeeper.app import Services
from statekeeper.events import Event
from statekeeper.server.app import create_app
from statekeeper.server.body import PIECE
from statekeeper.server.workers import (
    LOCAL_THREADS,
    REMOTE_THREADS,
    UPLOAD_THREADS,
    Workers,
    local_stores,
    threads_for,
)
from statekeeper.settings import load_settings
from statekeeper.storage.masterkeys import remote_master_key
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.testing.processes import MotoServer

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


@pytest.mark.parametrize(("threads", "waits_for_loop"), [(3, False), (UPLOAD_THREADS, True)])
def test_no_more_than_threads_run_at_once_and_the_rest_wait_their_turn(
    threads: int, waits_for_loop: bool
) -> None:
    # Store work on its threads; writes still receiving their body on theirs.
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

    jobs = threads + 9

    async def call() -> list[int]:
        return await asyncio.gather(
            *(workers.run(lambda n=n: job(n), waits_for_loop=waits_for_loop) for n in range(jobs))
        )

    try:
        results = asyncio.run(call())
    finally:
        workers.close()
    assert results == list(range(jobs))
    assert most == threads
    assert set(started[:threads]) == set(range(threads))  # the others waited for a thread


def test_a_function_waiting_for_the_loop_holds_none_of_the_bounded_threads() -> None:
    # A write whose body arrives at a slow client's pace: the one bounded thread stays
    # free for every other request's store work meanwhile.
    workers = Workers(1)
    release = threading.Event()

    async def call() -> tuple[str, bool]:
        upload = asyncio.ensure_future(workers.run(lambda: release.wait(5), waits_for_loop=True))
        await asyncio.sleep(0.05)  # the upload is on its thread, waiting
        async with asyncio.timeout(2):
            other = await workers.run(lambda: "answered meanwhile")
        release.set()
        return other, await upload

    try:
        other, waited = asyncio.run(call())
    finally:
        workers.close()
    assert (other, waited) == ("answered meanwhile", True)


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


def test_a_state_of_exactly_one_piece_is_written(api: Api) -> None:
    # The prefetch on the loop receives it to its end (its last piece and the end of
    # the body are two receives): whole, it may be written on the loop's thread.
    empty = state_bytes(1, outputs={"blob": {"value": "", "type": "string"}})
    data = state_bytes(1, outputs={"blob": {"value": "x" * (PIECE - len(empty)), "type": "string"}})
    assert len(data) == PIECE
    lock = lock_body("piece")
    assert api.lock(lock).status_code == 200
    assert api.write(data, lock_id="piece").status_code == 200
    got = api.get()
    assert got.status_code == 200
    assert got.content == data


def test_stores_on_this_machine_may_have_their_work_done_on_the_loops_thread() -> None:
    assert local_stores("sqlite:///tmp/a.db", "memory://x")
    assert not local_stores("sqlite:///tmp/a.db", "dynamodb://table")
    assert not local_stores("s3://bucket/prefix", "s3://bucket/prefix")


def _thread_of(workers: Workers, **run: bool) -> tuple[str, str]:
    """(the thread that ran a function, the context variable it saw) from one call."""

    def where() -> tuple[str, str]:
        seen = WHO.get()
        WHO.set("changed by the function")  # in a copy of the caller's context
        return threading.current_thread().name, seen

    async def call() -> tuple[str, str]:
        WHO.set("request 9")
        found = await workers.run(where, **run)
        assert WHO.get() == "request 9"
        return found

    return asyncio.run(call())


def test_a_request_alone_on_a_local_store_runs_on_the_loops_thread_in_a_copy_of_its_context() -> (
    None
):
    workers = Workers(2, inline=True)
    try:
        with workers.serving(("192.0.2.1", 50000)):
            thread, seen = _thread_of(workers)
    finally:
        workers.close()
    assert thread == threading.current_thread().name != "statekeeper-worker"
    assert seen == "request 9"


def test_without_inline_or_when_the_function_waits_for_the_loop_it_hops() -> None:
    remote, local = Workers(2), Workers(2, inline=True)
    try:
        assert _thread_of(remote) == ("statekeeper-worker", "request 9")
        assert _thread_of(local, waits_for_loop=True) == ("statekeeper-worker", "request 9")
    finally:
        remote.close()
        local.close()


def test_beside_another_request_being_answered_the_function_hops() -> None:
    workers = Workers(2, inline=True)
    client = ("192.0.2.1", 50000)
    try:
        with workers.serving(client), workers.serving(client):
            thread, _ = _thread_of(workers)
        with workers.serving(client):
            alone, _ = _thread_of(workers)
    finally:
        workers.close()
    assert thread == "statekeeper-worker"
    assert alone != "statekeeper-worker"


def test_for_a_while_after_two_clients_were_heard_every_function_hops() -> None:
    workers = Workers(2, inline=True, shared_seconds=0.3)
    first, second = ("192.0.2.1", 50000), ("192.0.2.2", 50001)
    threads = []
    try:
        for client in (first, first, second, second):
            with workers.serving(client):
                threads.append(_thread_of(workers)[0])
        time.sleep(0.4)  # nobody else heard from meanwhile
        with workers.serving(second):
            threads.append(_thread_of(workers)[0])
        with workers.serving(first):  # right after the other: both are there
            threads.append(_thread_of(workers)[0])
        time.sleep(0.4)
        with workers.serving(first):
            threads.append(_thread_of(workers)[0])
    finally:
        workers.close()
    on_loop, hop = threading.current_thread().name, "statekeeper-worker"
    assert threads == [on_loop, on_loop, hop, hop, on_loop, hop, on_loop]


def test_while_an_abandoned_function_still_runs_on_a_thread_the_next_one_hops() -> None:
    workers = Workers(2, inline=True)
    release = threading.Event()

    async def call() -> tuple[str, str]:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await workers.run(lambda: release.wait(5), waits_for_loop=True)
        during = await workers.run(lambda: threading.current_thread().name)
        release.set()
        after, deadline = during, time.monotonic() + 5
        while after == "statekeeper-worker" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # until its end is settled on the loop
            after = await workers.run(lambda: threading.current_thread().name)
        return during, after

    try:
        during, after = asyncio.run(call())
    finally:
        workers.close()
    assert during == "statekeeper-worker"
    assert after != "statekeeper-worker"


def _record_threads(api: Api) -> list[tuple[str, str]]:
    """(action, thread) of every event the app records from now on."""
    seen: list[tuple[str, str]] = []

    def record(event: Event) -> None:
        seen.append((event.action.value, threading.current_thread().name))

    api.services.events.subscribe(record)
    return seen


def test_in_the_app_a_request_beside_a_write_receiving_its_body_runs_on_the_loops_thread(
    api: Api,
) -> None:
    loop_thread = threading.current_thread().name  # the test client's loop runs here
    seen = _record_threads(api)
    assert api.write(state_bytes(1), name="alone").status_code == 200
    assert api.get("alone").status_code == 200
    assert [thread for _, thread in seen] == [loop_thread, loop_thread]
    seen.clear()

    # A chunked write waits on a worker thread for the rest of its body while a GET
    # comes in: the GET's work runs on the loop meanwhile, and both are answered.
    rest = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        data = state_bytes(2)
        yield data[:10]
        await rest.wait()
        yield data[10:]

    async def both() -> tuple[int, int]:
        headers = {"Content-Type": "application/json"}
        post = asyncio.ensure_future(
            api.client.post(api.url("alone"), content=slow_body(), headers=headers)
        )
        await asyncio.sleep(0.2)  # the write is on its thread, waiting for its body
        got = await api.client.get(api.url("alone"))
        rest.set()
        return (await post).status_code, got.status_code

    assert api.loop.run_until_complete(both()) == (200, 200)
    assert seen == [("read", loop_thread), ("write", "statekeeper-worker")]


class _Syncs:
    """Every fsync of the store's log the embedded database makes itself (the ends of
    a request's commits), with the thread it ran on; each waits for ``go`` first."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[str] = []
        self.go = threading.Event()
        self.go.set()
        fsync_log = SqliteDatabase._fsync_log

        def watched(db: SqliteDatabase) -> None:
            self.threads.append(threading.current_thread().name)
            assert self.go.wait(10)
            fsync_log(db)

        monkeypatch.setattr(SqliteDatabase, "_fsync_log", watched)


def test_in_the_app_requests_arriving_together_run_on_the_loops_thread_and_sync_on_a_worker(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"together/{n}" for n in range(4)]
    for name in names:
        assert api.write(state_bytes(1), name=name).status_code == 200
    seen, syncs = _record_threads(api), _Syncs(monkeypatch)

    async def together() -> list[int]:
        answers = await asyncio.gather(*(api.client.get(api.url(name)) for name in names))
        return [answer.status_code for answer in answers]

    assert api.loop.run_until_complete(together()) == [200] * 4
    assert seen == [("read", threading.current_thread().name)] * 4
    # Each read's audit record is synced before its answer, on a worker thread: one
    # fsync each at most (concurrent ones share it), none on the loop's thread.
    assert 1 <= len(syncs.threads) <= 4
    assert set(syncs.threads) == {"statekeeper-worker"}


def test_in_the_app_no_answer_comes_before_the_sync_its_commits_owe(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work on the loop's thread leaves its fsync to a worker: the answer, an error's
    (a lock conflict, recorded in the audit trail) as a result's, waits for it."""
    assert api.write(state_bytes(1)).status_code == 200
    assert api.lock(lock_body()).status_code == 200
    syncs = _Syncs(monkeypatch)
    syncs.go.clear()

    async def together() -> tuple[bool, list[int]]:
        conflict = lock_body()
        headers = {"Content-Type": "application/json", "Content-MD5": md5_header(conflict)}
        answers = asyncio.gather(
            api.client.get(api.url()),
            api.client.request("LOCK", api.url(), content=conflict, headers=headers),
        )
        done, _ = await asyncio.wait([answers], timeout=0.5)
        early = bool(done)
        syncs.go.set()
        return early, [answer.status_code for answer in await answers]

    early, codes = api.loop.run_until_complete(together())
    assert not early, "answered before its commits were synced"
    assert codes == [200, 423]
    assert syncs.threads and set(syncs.threads) == {"statekeeper-worker"}


def test_in_the_app_a_write_beside_another_client_hops_whole(services: Services) -> None:
    """A new version's commit syncs (it is read by nobody before it is on disk), so
    beside other work its write runs on a worker thread, all of it."""
    app = create_app(services)
    first, second = Api(app, services), Api(app, services)
    second.loop.run_until_complete(second.client.aclose())  # one from another address:
    second.client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("198.51.100.9", 6000)),
        base_url="http://localhost",
    )
    seen = _record_threads(first)
    try:
        assert first.write(state_bytes(1)).status_code == 200
        assert second.get().status_code == 200
        assert first.write(state_bytes(2)).status_code == 200
        assert first.get().status_code == 200
    finally:
        first.close()
        second.close()
    loop_thread = threading.current_thread().name
    assert seen == [
        ("write", loop_thread),
        ("read", loop_thread),
        ("write", "statekeeper-worker"),
        ("read", loop_thread),
    ]


@pytest.mark.timeout(60)
def test_a_body_larger_than_the_prefetch_is_received_for_a_thread_alone_in_the_server(
    api: Api,
) -> None:
    seen = _record_threads(api)
    big = state_bytes(1, outputs={"blob": {"value": "x" * (3 * PIECE), "type": "string"}})
    assert api.write(big, name="big").status_code == 200
    assert seen == [("write", "statekeeper-worker")]
    assert api.current("big") == big


@pytest.mark.aws
def test_with_a_kms_master_key_no_store_work_runs_on_the_loops_thread(
    tmp_path: Path, moto: MotoServer
) -> None:
    """A data key not yet cached is unwrapped by KMS, over the network: such work must
    never block the event loop, alone or not."""
    kms = boto3.client("kms", endpoint_url=moto.url, region_name="us-east-1")
    key_id = kms.create_key(Description="statekeeper test")["KeyMetadata"]["KeyId"]
    settings = {"data_dir": tmp_path / "data", "master_key": f"awskms://{key_id}"}
    services = Services.build(load_settings(settings, env={}))
    api = Api(create_app(services), services)
    seen = _record_threads(api)
    try:
        assert api.write(state_bytes(1)).status_code == 200
        assert api.get().status_code == 200
    finally:
        api.close()
        services.close()
    assert seen == [("write", "statekeeper-worker"), ("read", "statekeeper-worker")]
    assert remote_master_key(f"{b64encode(bytes(32)).decode()}, awskms://alias/next")
    assert not remote_master_key(b64encode(bytes(32)).decode())
    assert not remote_master_key(None)
