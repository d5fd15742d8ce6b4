"""Webhooks on S3 (moto): the outbox is objects in the bucket, written before the answer,
delivered by any replica, once in the normal case, and erased after delivery with every
version; the delivery log and the done markers expire."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.hooks.test_webhooks import FAST, NAME, SECRET, Receiver, receiver  # noqa: F401
from tests.security.support import state_json

from statekeeper.errors import NotFound
from statekeeper.events import Action, Event
from statekeeper.hooks.objects import HOOKS_PREFIX, ObjectOutbox
from statekeeper.hooks.outbox import Attempt
from statekeeper.storage.aws.s3 import S3Store
from statekeeper.storage.base import ObjectInfo, ObjectStore
from statekeeper.storage.metered import MeteredStore
from statekeeper.storage.registry import open_store
from statekeeper.testing.processes import SRC, MotoServer, StatekeeperServer
from statekeeper.times import utcnow

pytestmark = pytest.mark.aws

BUCKET = "hooked"
TABLE = "hooked-locks"


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    moto.versioned_bucket(BUCKET)
    moto.lock_table(TABLE)
    return moto.client("s3")


STORE = ("--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}")


def _cli(moto: MotoServer, tmp_path: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "statekeeper", *args, *STORE],
        cwd=tmp_path,
        env={**os.environ, **moto.env(), **FAST, "PYTHONPATH": str(SRC), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _outbox(s3: Any) -> list[str]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=HOOKS_PREFIX + "outbox/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_an_event_written_to_the_bucket_survives_sigkill_and_is_delivered_after_restart(
    tmp_path: Path, serve: Callable[..., StatekeeperServer], moto: MotoServer, s3: Any
) -> None:
    late = Receiver()  # not listening yet: every attempt is refused
    _cli(moto, tmp_path, "hooks", "add", "ci", "--url", late.url, "--secret", SECRET)
    env = {**moto.env(), **FAST, "STATEKEEPER_HOOKS_BACKOFF": "30"}
    server = serve(*STORE, env=env, workdir=tmp_path / "a")
    written = httpx.post(server.state_url(NAME), content=state_json(1), timeout=30)
    assert written.status_code == 200
    # In the bucket before the answer: the entry is there as soon as the write answered.
    (entry,) = _outbox(s3)
    assert entry.startswith(HOOKS_PREFIX + "outbox/") and entry.endswith(".ci.json")
    server.kill()  # SIGKILL: nothing flushed, the lease (if any) left to run out

    late.start()
    try:
        # Another replica (a new process, its own data directory) delivers it.
        serve(*STORE, env={**moto.env(), **FAST}, workdir=tmp_path / "b")
        late.wait_for(1, timeout=120)
        (delivery,) = late.deliveries
        assert delivery["verified"]
        assert delivery["event"]["type"] == "io.statekeeper.state.written"
        assert delivery["event"]["data"]["version"] == written.json()["version_id"]
        deadline = time.monotonic() + 30
        while _outbox(s3):
            assert time.monotonic() < deadline, "the delivered entry is removed"
            time.sleep(0.2)
        log = _cli(moto, tmp_path, "hooks", "deliveries", "--outcome", "delivered")
        assert "state.written" in log
    finally:
        late.stop()


def test_two_replicas_on_one_bucket_deliver_each_event_once(
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    moto: MotoServer,
    s3: Any,
    receiver: Receiver,  # noqa: F811
) -> None:
    _cli(moto, tmp_path, "hooks", "add", "ci", "--url", receiver.url, "--secret", SECRET)
    env = {**moto.env(), **FAST}
    replicas = [serve(*STORE, env=env, workdir=tmp_path / f"r{n}") for n in range(2)]
    writes = 8
    with httpx.Client(timeout=30) as http:
        for serial in range(1, writes + 1):
            url = replicas[serial % 2].state_url(f"team/s{serial}.tfstate")
            assert http.post(url, content=state_json(serial)).status_code == 200
    receiver.wait_for(writes, timeout=120)
    time.sleep(12)  # two polls of both senders: a duplicate would have come by now
    ids = Counter(d["event_id"] for d in receiver.deliveries)
    assert len(ids) == writes
    log = json.loads(_cli(moto, tmp_path, "hooks", "deliveries", "--json"))
    delivered = Counter(row["event_id"] for row in log if row["outcome"] == "delivered")
    assert delivered == Counter(dict.fromkeys(ids, 1)), f"delivered more than once: {log}"
    # Sent again only as at least once sends: after an attempt that failed (a timeout on
    # a loaded machine, the receiver having got it), never by a second claim.
    failed = {row["event_id"] for row in log if row["outcome"] != "delivered"}
    again = {event_id for event_id, sent in ids.items() if sent > 1}
    assert again <= failed, f"sent more than once with no failed attempt: {ids}, {log}"
    assert all(d["verified"] for d in receiver.deliveries)
    assert _outbox(s3) == []


def test_a_hook_added_while_a_replica_serves_reaches_its_request_path(
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    moto: MotoServer,
    s3: Any,
    receiver: Receiver,  # noqa: F811
) -> None:
    server = serve(*STORE, env={**moto.env(), **FAST}, workdir=tmp_path / "a")
    with httpx.Client(timeout=30) as http:
        assert http.post(server.state_url(NAME), content=state_json(1)).status_code == 200
        # The request path reads the subscriptions from memory: the worker's next look
        # (within 5 s) sees the new one and the server reads them again.
        _cli(moto, tmp_path, "hooks", "add", "ci", "--url", receiver.url, "--secret", SECRET)
        serial = 2
        deadline = time.monotonic() + 60
        while not receiver.deliveries:
            assert time.monotonic() < deadline, "the hook added at runtime was never delivered"
            assert http.post(server.state_url(NAME), content=state_json(serial)).status_code == 200
            serial += 1
            time.sleep(1)
    assert receiver.deliveries[0]["verified"]
    assert receiver.deliveries[0]["event"]["data"]["serial"] > 1


def _versions(s3: Any, prefix: str) -> list[tuple[str, bool]]:
    """Every version and delete marker under ``prefix``: (key, is a marker)."""
    listed = s3.list_object_versions(Bucket=BUCKET, Prefix=HOOKS_PREFIX + prefix)
    return [(v["Key"], False) for v in listed.get("Versions", [])] + [
        (m["Key"], True) for m in listed.get("DeleteMarkers", [])
    ]


def test_what_the_outbox_removes_is_erased_with_its_versions_and_the_log_expires(
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    moto: MotoServer,
    s3: Any,
    receiver: Receiver,  # noqa: F811
) -> None:
    failing = Receiver(status=500).start()
    try:
        for name, url in (("ci", receiver.url), ("gone", failing.url)):
            _cli(moto, tmp_path, "hooks", "add", name, "--url", url, "--secret", SECRET)
        env = {
            **moto.env(),
            **FAST,
            "STATEKEEPER_HOOKS_ATTEMPTS": "2",  # the failing hook's event: a retry, then dead
            "STATEKEEPER_HOOKS_DELIVERIES_KEPT": "3s",
        }
        server = serve(*STORE, env=env, workdir=tmp_path / "a")
        written = httpx.post(server.state_url(NAME), content=state_json(1), timeout=30)
        assert written.status_code == 200
        receiver.wait_for(1)
        failing.wait_for(2)
    finally:
        failing.stop()
    (dead,) = json.loads(_cli(moto, tmp_path, "hooks", "deliveries", "--outcome", "dead", "--json"))

    # Claimed, retried, delivered or dead: no version and no delete marker of any entry
    # stays, and the attempts older than 3 s are erased too, but the dead letter.
    deadline = time.monotonic() + 60
    while _versions(s3, "outbox/") or len(_versions(s3, "deliveries/")) != 1:
        assert time.monotonic() < deadline, (_versions(s3, "outbox/"), _versions(s3, "deliveries/"))
        time.sleep(0.5)
    ((key, marker),) = _versions(s3, "deliveries/")
    assert key.endswith(".gone.dead.json") and not marker
    # Listed as before, with the seq it had.
    assert json.loads(_cli(moto, tmp_path, "hooks", "deliveries", "--json")) == [dead]

    _cli(moto, tmp_path, "hooks", "remove", "gone")
    assert [k for k, _ in _versions(s3, "subscriptions/")] == [
        HOOKS_PREFIX + "subscriptions/ci.json"
    ]


def test_done_markers_expire_with_the_log_and_an_event_offered_after_is_queued_again(
    moto: MotoServer, s3: Any
) -> None:
    store = open_store(f"s3://{BUCKET}")
    outbox = ObjectOutbox(store.records.objects)
    stale = Event(action=Action.LOCK, actor="ci", state=NAME, detail="held", id="stale-1")
    outbox.enqueue("lock.stale", stale, ["ci"])
    (entry,) = outbox.claim("me", 60)
    outbox.finish("me", [Attempt(entry, "delivered", 200, None, 0.01)])
    outbox.enqueue("lock.stale", stale, ["ci"])  # offered again: the marker says done
    assert _outbox(s3) == []
    assert [k for k, _ in _versions(s3, "done/")] == [HOOKS_PREFIX + "done/stale-1.ci"]

    # A little ahead: the bucket's clock stamps the marker, to the second.
    assert outbox.expire(utcnow() + timedelta(seconds=2)) == 2  # the attempt and the marker
    assert _versions(s3, "done/") == [] and _versions(s3, "deliveries/") == []
    assert _versions(s3, "outbox/") == []
    outbox.enqueue("lock.stale", stale, ["ci"])
    assert len(_outbox(s3)) == 1


def test_a_dead_entry_is_kept_for_redelivery_and_one_dead_before_that_is_refused(
    moto: MotoServer, s3: Any
) -> None:
    store = open_store(f"s3://{BUCKET}")
    outbox = ObjectOutbox(store.records.objects)
    for event_id in ("kept-1", "old-1"):
        event = Event(action=Action.WRITE, actor="ci", state=NAME, id=event_id)
        outbox.enqueue("state.written", event, ["ci"])
    entries = outbox.claim("me", 60)
    outbox.finish("me", [Attempt(e, "dead", 500, "HTTP 500", 0.01) for e in entries])
    assert _outbox(s3) == []
    kept, old = sorted(k for k, _ in _versions(s3, "dead/"))
    # A key of each death's own: the event, the hook, the time it died.
    assert re.fullmatch(re.escape(HOOKS_PREFIX) + r"dead/kept-1\.ci\.\d{17}\.json", kept)
    assert old.startswith(HOOKS_PREFIX + "dead/old-1.ci.")
    # As a dead letter of the versions before dead/ was kept: its log row alone.
    store.records.objects.erase(old)

    with pytest.raises(NotFound, match="died before statekeeper kept the events"):
        outbox.redeliver("ci", "old-1")
    assert outbox.redeliver("ci") == ["kept-1"]
    (entry,) = outbox.claim("me", 60)
    assert (entry.event_id, entry.attempts, entry.recorded["id"]) == ("kept-1", 0, "kept-1")
    assert _versions(s3, "dead/") == []
    assert [r["event_id"] for r in outbox.deliveries(outcome="dead")] == ["old-1"]
    assert [r["event_id"] for r in outbox.deliveries(outcome="retry")] == ["kept-1"]


def test_an_entry_being_erased_after_its_delivery_is_never_claimed_again(
    moto: MotoServer, s3: Any
) -> None:
    # Two replicas: each its own store and client. Replica B looks for entries between
    # the DeleteObject calls of A's erase of the delivered one, the moment a loaded
    # machine once gave it: no version of the entry may be current then but the claimed.
    a = ObjectOutbox(open_store(f"s3://{BUCKET}").records.objects)
    b = ObjectOutbox(open_store(f"s3://{BUCKET}").records.objects)
    event = Event(action=Action.WRITE, actor="ci", state=NAME, id="once-1")
    a.enqueue("state.written", event, ["ci"])
    (entry,) = a.claim("a", 60)
    claimed_by_b: list[list[str]] = []

    def between_removals(**_: Any) -> None:
        claimed_by_b.append([e.event_id for e in b.claim("b", 60)])

    assert isinstance(a.store, S3Store)
    a.store.where.client.meta.events.register("after-call.s3.DeleteObject", between_removals)
    a.finish("a", [Attempt(entry, "delivered", 200, None, 0.01)])
    # After each removal (one per version: the entry as queued, then as claimed).
    assert claimed_by_b == [[], []], "the entry delivered by A was claimed again by B"
    assert _versions(s3, "outbox/") == []


def test_a_stale_lock_offered_again_while_its_delivered_entry_is_erased_is_not_queued(
    moto: MotoServer, s3: Any
) -> None:
    # Every replica's scan offers the same lock.stale event; one offers it again just
    # as another erases the entry it delivered (each DeleteObject of the erase).
    a = ObjectOutbox(open_store(f"s3://{BUCKET}").records.objects)
    b = ObjectOutbox(open_store(f"s3://{BUCKET}").records.objects)
    stale = Event(action=Action.LOCK, actor="ci", state=NAME, detail="held", id="stale-2")
    a.enqueue("lock.stale", stale, ["ci"])
    (entry,) = a.claim("a", 60)

    def offered_again(**_: Any) -> None:
        b.enqueue("lock.stale", stale, ["ci"])

    assert isinstance(a.store, S3Store)
    a.store.where.client.meta.events.register("after-call.s3.DeleteObject", offered_again)
    a.finish("a", [Attempt(entry, "delivered", 200, None, 0.01)])
    assert _outbox(s3) == [], "the delivered stale lock was queued again"


class _Unobserved:
    """A storage observer that notes nothing."""

    def storage_timer(self, driver: str, operation: str) -> Callable[[float], None]:
        return lambda seconds: None

    def storage_call(self, driver: str, operation: str, seconds: float, error: str | None) -> None:
        pass

    def state_stored(self, size: int) -> None:
        pass


class _Then(MeteredStore):
    """``inner`` with ``act`` run once, just after the first ``put`` (or ``put_if_absent``,
    ``conditional``) of a key under ``prefix`` returns."""

    def __init__(
        self, inner: ObjectStore, prefix: str, act: Callable[[], None], conditional: bool
    ) -> None:
        super().__init__(inner, _Unobserved())
        self.prefix = prefix
        self.conditional = conditional
        self.act: Callable[[], None] | None = act

    def _after(self, key: str, conditional: bool) -> None:
        if self.act is not None and conditional == self.conditional and key.startswith(self.prefix):
            act, self.act = self.act, None
            act()

    def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> ObjectInfo:
        info = super().put(key, data, metadata)
        self._after(key, False)
        return info

    def put_if_absent(self, key: str, data: bytes, metadata: Mapping[str, str]) -> bool:
        created = super().put_if_absent(key, data, metadata)
        self._after(key, True)
        return created


def _dies_again(sender: ObjectOutbox) -> Callable[[], None]:
    """Another replica's sender claiming what is due and finding it dead (one attempt
    allowed, the receiver still down)."""

    def run() -> None:
        entries = sender.claim("other", 60)
        sender.finish("other", [Attempt(e, "dead", 500, "HTTP 500", 0.01) for e in entries])

    return run


def test_a_redelivery_that_dies_again_before_the_redelivery_ends_stays_redeliverable(
    moto: MotoServer, s3: Any
) -> None:
    store = open_store(f"s3://{BUCKET}")
    sender = ObjectOutbox(store.records.objects)
    event = Event(action=Action.WRITE, actor="ci", state=NAME, id="again-1")
    sender.enqueue("state.written", event, ["ci"])
    _dies_again(sender)()

    # The redelivery's entry is claimed by another replica and dies again while the
    # redelivery is still rewriting the log and erasing what it revived.
    outbox = HOOKS_PREFIX + "outbox/"
    objects = _Then(store.records.objects, outbox, _dies_again(sender), conditional=True)
    assert ObjectOutbox(objects).redeliver("ci", "again-1") == ["again-1"]
    assert _outbox(s3) == []
    # Its second death is kept: it can be sent again, once more.
    assert [r["event_id"] for r in sender.deliveries(outcome="dead")] == ["again-1"]
    assert sender.redeliver("ci", "again-1") == ["again-1"]
    (entry,) = sender.claim("me", 60)
    assert (entry.event_id, entry.attempts) == ("again-1", 0)


def test_a_redelivery_while_the_dead_entry_is_still_in_the_outbox_leaves_it_dead(
    moto: MotoServer, s3: Any
) -> None:
    store = open_store(f"s3://{BUCKET}")
    redelivered: list[list[str]] = []
    # Asked between the sender keeping the dead entry and erasing its outbox object.
    operator = ObjectOutbox(store.records.objects)
    objects = _Then(
        store.records.objects,
        HOOKS_PREFIX + "dead/",
        lambda: redelivered.append(operator.redeliver("ci", "dying-1")),
        conditional=False,
    )
    sender = ObjectOutbox(objects)
    event = Event(action=Action.WRITE, actor="ci", state=NAME, id="dying-1")
    sender.enqueue("state.written", event, ["ci"])
    _dies_again(sender)()
    assert redelivered == [[]]  # not queued: the outbox holds the dead entry itself
    assert _outbox(s3) == []
    # Not lost from both: still dead, and redelivered when asked again.
    assert operator.redeliver("ci", "dying-1") == ["dying-1"]
    assert [e.event_id for e in operator.claim("me", 60)] == ["dying-1"]
