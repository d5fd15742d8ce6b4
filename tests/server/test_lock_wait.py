"""A LOCK retried after a 423 on a state this server holds waits for its UNLOCK (``lock_wait``),
first come first served; against ``statekeeper serve``, with LOCKs in flight on threads."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import httpx

from statekeeper.app import Services
from statekeeper.events import Action
from statekeeper.security.audit import AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import StatekeeperServer

PATH = "/state/team/app.tfstate"


def _lock(who: str) -> bytes:
    return LockInfo.new("OperationTypeApply", who, lock_id=str(uuid.uuid4())).body


def _send(server: StatekeeperServer, method: str, body: bytes) -> tuple[int, dict[str, str], float]:
    started = time.monotonic()
    r = httpx.request(method, server.url + PATH, content=body, timeout=30)
    return r.status_code, r.json(), time.monotonic() - started


def _retried(
    pool: ThreadPoolExecutor, server: StatekeeperServer, body: bytes
) -> Future[tuple[int, dict[str, str], float]]:
    """A LOCK refused at once, then its retry (under the same ID), which waits."""
    status, _, waited = _send(server, "LOCK", body)
    assert status == 423 and waited < 0.9
    future = pool.submit(_send, server, "LOCK", body)
    time.sleep(0.3)  # the LOCK has reached the server and waits
    assert not future.done()
    return future


def test_a_waiting_lock_gets_the_lock_at_the_holders_unlock_first_come_first_served(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve(env={"STATEKEEPER_LOCK_WAIT": "20"})
    a, b, c = _lock("a@host"), _lock("b@host"), _lock("c@host")
    assert _send(server, "LOCK", a)[0] == 200
    with ThreadPoolExecutor(2) as pool:
        second = _retried(pool, server, b)
        third = _retried(pool, server, c)
        assert _send(server, "UNLOCK", a)[0] == 200
        status, body, waited = second.result(timeout=10)
        assert (status, body["ID"]) == (200, json.loads(b)["ID"])
        assert 0.3 <= waited < 10
        assert not third.done()  # the next in line keeps waiting for b's UNLOCK
        assert _send(server, "UNLOCK", b)[0] == 200
        status, body, _ = third.result(timeout=10)
        assert (status, body["ID"]) == (200, json.loads(c)["ID"])
    assert _send(server, "UNLOCK", c)[0] == 200


def test_a_waiting_lock_is_not_refused_while_the_line_moves(
    serve: Callable[..., StatekeeperServer],
) -> None:
    """b waits behind a for longer than ``lock_wait`` in all, but the lock changed
    hands here meanwhile (holder to a): b's wait starts again, and a's UNLOCK is b's."""
    server = serve(env={"STATEKEEPER_LOCK_WAIT": "1"})
    holder, a, b = _lock("holder@host"), _lock("a@host"), _lock("b@host")
    assert _send(server, "LOCK", holder)[0] == 200
    with ThreadPoolExecutor(2) as pool:
        first = _retried(pool, server, a)
        b_started = time.monotonic()
        second = _retried(pool, server, b)
        assert _send(server, "UNLOCK", holder)[0] == 200
        status, body, _ = first.result(timeout=10)
        assert (status, body["ID"]) == (200, json.loads(a)["ID"])
        time.sleep(max(0.0, b_started + 1.4 - time.monotonic()))
        assert not second.done()  # past its lock_wait, still waiting: the line moved
        assert _send(server, "UNLOCK", a)[0] == 200
        status, body, waited = second.result(timeout=10)
        assert (status, body["ID"]) == (200, json.loads(b)["ID"])
        assert waited >= 1.0
    assert _send(server, "UNLOCK", b)[0] == 200


def test_a_lock_whose_wait_ran_out_keeps_its_place_in_line(
    serve: Callable[..., StatekeeperServer],
) -> None:
    """a waits first; its wait ends (423) and it retries while b, who came after it,
    still waits: the holder's UNLOCK goes to a. Sent to the back, a retry would time
    out again before its turn whenever the line is longer than ``lock_wait``."""
    server = serve(env={"STATEKEEPER_LOCK_WAIT": "3"})
    holder, a, b = _lock("holder@host"), _lock("a@host"), _lock("b@host")
    assert _send(server, "LOCK", holder)[0] == 200
    a_ran_out = threading.Event()

    def a_waits_twice() -> tuple[int, tuple[int, dict[str, str], float]]:
        status = _send(server, "LOCK", a)[0]
        a_ran_out.set()
        return status, _send(server, "LOCK", a)

    with ThreadPoolExecutor(2) as pool:
        assert _send(server, "LOCK", a)[0] == 423  # the first try, at once
        first = pool.submit(a_waits_twice)
        time.sleep(1.0)
        second = _retried(pool, server, b)  # queued after a, waits until about 4 s
        assert a_ran_out.wait(10)
        time.sleep(0.3)  # a's retry has reached the server and waits again
        assert not second.done()
        assert _send(server, "UNLOCK", holder)[0] == 200
        ran_out, (status, body, _) = first.result(timeout=10)
        assert ran_out == 423
        assert (status, body["ID"]) == (200, json.loads(a)["ID"])
        status, body, _ = second.result(timeout=10)
        assert (status, body["ID"]) == (423, json.loads(a)["ID"])
    assert _send(server, "UNLOCK", a)[0] == 200


def test_a_lock_not_released_in_time_is_a_423_naming_the_holder(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve(env={"STATEKEEPER_LOCK_WAIT": "0.5"})
    a, b = _lock("a@host"), _lock("b@host")
    assert _send(server, "LOCK", a)[0] == 200
    status, body, waited = _send(server, "LOCK", b)
    assert (status, body["ID"]) == (423, json.loads(a)["ID"])
    assert waited < 0.45  # the first try is answered at once
    status, body, waited = _send(server, "LOCK", b)
    assert (status, body["ID"], body["Who"]) == (423, json.loads(a)["ID"], "a@host")
    assert 0.5 <= waited < 5
    # One LOCK is one event, however long it waited.
    server.stop()
    services = Services.build(load_settings({"data_dir": server.workdir / ".statekeeper"}, env={}))
    try:
        outcomes = [
            e.outcome
            for e in services.audit.query(AuditFilter(state="team/app.tfstate"))
            if e.action == Action.LOCK
        ]
    finally:
        services.close()
    assert outcomes == ["ok", "locked", "locked"]


def test_without_a_wait_and_for_a_lock_taken_elsewhere_the_423_comes_at_once(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve(env={"STATEKEEPER_LOCK_WAIT": "0"})
    assert _send(server, "LOCK", _lock("a@host"))[0] == 200
    b = _lock("b@host")
    for _ in range(2):
        status, _, waited = _send(server, "LOCK", b)
        assert status == 423 and waited < 0.9

    waiting = serve(env={"STATEKEEPER_LOCK_WAIT": "20"}, workdir=server.workdir.parent / "other")
    # Taken by another process on the same database (the CLI, another replica):
    # this server never sees its release, so it does not wait for one.
    services = Services.build(load_settings({"data_dir": waiting.workdir / ".statekeeper"}, env={}))
    try:
        services.locks.lock(
            StateName("team/app.tfstate"), _lock("cli@host"), Caller("anonymous", None)
        )
        for _ in range(2):
            status, body, waited = _send(waiting, "LOCK", b)
            assert (status, body["Who"]) == (423, "cli@host")
            assert waited < 5
    finally:
        services.close()
