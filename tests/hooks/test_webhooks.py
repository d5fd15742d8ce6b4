"""Webhooks from real ``statekeeper serve`` processes to a receiver started by the test.

The receiver checks every signature the way the docs tell a receiver to (its
own HMAC code, not statekeeper's), counts deliveries, and answers what the
test tells it to.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.security.support import lock_body, state_json

from statekeeper.errors import BadRequest
from statekeeper.hooks.guard import destinations
from statekeeper.hooks.signing import sign, verify
from statekeeper.testing.processes import SRC, StatekeeperServer, free_port

SECRET = "whsec_test_0123456789"
NAME = "team/app.tfstate"
FAST = {"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1", "STATEKEEPER_HOOKS_BACKOFF": "0.2"}


DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def documented_verify() -> Callable[[str, bytes, str], bool]:
    """The receiver's verification exactly as docs/observability.md prints it."""
    text = DOCS.read_text()
    section = text[text.index("### Signatures") :]
    start = section.index("```python\n") + len("```python\n")
    namespace: dict[str, Any] = {}
    exec(section[start : section.index("```", start)], namespace)  # our own docs
    verify_snippet: Callable[[str, bytes, str], bool] = namespace["verify"]
    return verify_snippet


receiver_verifies = documented_verify()


class Receiver:
    """An HTTP server on loopback that records deliveries and answers ``status``."""

    def __init__(self, port: int | None = None, status: int = 200) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.status = status
        self.deliveries: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.deliveries.append(
                    {
                        "event": json.loads(body),
                        "body": body,
                        "verified": receiver_verifies(
                            self.headers["Statekeeper-Signature"], body, SECRET
                        ),
                        "content_type": self.headers["Content-Type"],
                        "event_id": self.headers["Statekeeper-Event-Id"],
                    }
                )
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def types(self) -> list[str]:
        return [d["event"]["type"] for d in self.deliveries]

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < count:
            assert time.monotonic() < deadline, f"{len(self.deliveries)} deliveries: {self.types()}"
            time.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def statekeeper(workdir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """``statekeeper ARGS`` on the embedded store in ``workdir``; its stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "statekeeper", *args, "--data-dir", str(workdir / ".statekeeper")],
        env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def add_hook(workdir: Path, url: str, *extra: str) -> None:
    statekeeper(workdir, "hooks", "add", "ci", "--url", url, "--secret", SECRET, *extra, env=FAST)


def test_signatures_sign_the_time_and_the_body() -> None:
    body = b'{"a":1}'
    header = sign(SECRET, body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(header, body, SECRET, now=1_700_000_100)
    assert not verify(header, body + b" ", SECRET, now=1_700_000_100)
    assert not verify(header, body, "another secret", now=1_700_000_100)
    assert not verify(header, body, SECRET, now=1_700_000_000 + 301)  # replayed too late
    assert verify(f"{header},v1=00ff", body, SECRET, now=1_700_000_000)  # rotation: any v1


def mac(t: int, body: bytes = b'{"a":1}') -> str:
    """The ``v1`` value statekeeper sends for ``body`` at ``t``."""
    return sign(SECRET, body, timestamp=t).partition(",v1=")[2]


# (header for the time t, whether a receiver accepts it) for body b'{"a":1}'.
HEADERS: dict[str, tuple[Callable[[int], str], bool]] = {
    "as sent": (lambda t: f"t={t},v1={mac(t)}", True),
    "spaces around the parts": (lambda t: f" t={t} ,  v1={mac(t)} ", True),
    "rotation: the valid v1 first": (lambda t: f"t={t},v1={mac(t)},v1={'0' * 64}", True),
    "rotation: the valid v1 last": (lambda t: f"t={t},v1={'0' * 64},v1={mac(t)}", True),
    "rotation: a non-ASCII v1 first": (lambda t: f"t={t},v1=é{mac(t)[1:]},v1={mac(t)}", True),
    "a later scheme beside v1": (lambda t: f"t={t},v2=abc,v1={mac(t)}", True),
    "a part without =": (lambda t: f"t={t},junk,v1={mac(t)}", True),
    "the first of two t": (lambda t: f"t={t},t=1,v1={mac(t)}", True),
    "within the window": (lambda t: f"t={t - 200},v1={mac(t - 200)}", True),
    "empty": (lambda t: "", False),
    "commas only": (lambda t: ",,", False),
    "missing t": (lambda t: f"v1={mac(t)}", False),
    "t without =": (lambda t: f"t,v1={mac(t)}", False),
    "empty t": (lambda t: f"t=,v1={mac(t)}", False),
    "t not a number": (lambda t: f"t=now,v1={mac(t)}", False),
    "t a decimal": (lambda t: f"t={t}.0,v1={mac(t)}", False),
    "t signed": (lambda t: f"t=+{t},v1={mac(t)}", False),
    "t with a space inside": (lambda t: f"t= {t},v1={mac(t)}", False),
    "t a superscript digit": (lambda t: f"t=²,v1={mac(t)}", False),
    "t in other digits": (lambda t: f"t={str(t).translate(ARABIC_INDIC)},v1={mac(t)}", False),
    "t of 5000 digits": (lambda t: f"t={'9' * 5000},v1={mac(t)}", False),
    "the second of two t": (lambda t: f"t=1,t={t},v1={mac(t)}", False),
    "too old": (lambda t: f"t={t - 400},v1={mac(t - 400)}", False),
    "too far ahead": (lambda t: f"t={t + 400},v1={mac(t + 400)}", False),
    "missing v1": (lambda t: f"t={t}", False),
    "v1 without =": (lambda t: f"t={t},v1", False),
    "empty v1": (lambda t: f"t={t},v1=", False),
    "v1 another secret's": (lambda t: f"t={t},v1={'0' * 64}", False),
    "v1 signs another time": (lambda t: f"t={t},v1={mac(t - 1)}", False),
    "v1 uppercase key": (lambda t: f"t={t},V1={mac(t)}", False),
    "v1 non-ASCII": (lambda t: f"t={t},v1=é{mac(t)[1:]}", False),
    "v1 a lone surrogate": (lambda t: f"t={t},v1=\udcff{mac(t)[1:]}", False),
    "v1 with a space inside": (lambda t: f"t={t},v1= {mac(t)}", False),
}
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


@pytest.mark.parametrize("verifier", [verify, receiver_verifies], ids=["verify", "docs"])
@pytest.mark.parametrize("case", HEADERS)
def test_a_malformed_signature_is_refused_never_raised(
    case: str, verifier: Callable[[str, bytes, str], bool]
) -> None:
    """Anyone can send a receiver any header: both verifiers answer, never raise."""
    header, accepted = HEADERS[case]
    assert verifier(header(int(time.time())), b'{"a":1}', SECRET) is accepted


def test_state_and_lock_events_arrive_signed_as_cloudevents(
    tmp_path: Path, serve: Callable[..., StatekeeperServer], receiver: Receiver
) -> None:
    workdir = tmp_path / "server"
    add_hook(workdir, receiver.url, "--state", "team/**")
    server = serve(workdir=workdir, env=FAST)
    lock_id = str(uuid.uuid4())
    with httpx.Client(timeout=30) as http:
        url = server.state_url(NAME)
        assert http.request("LOCK", url, content=lock_body(lock_id)).status_code == 200
        assert http.post(url, params={"ID": lock_id}, content=state_json(1)).status_code == 200
        assert http.request("UNLOCK", url, content=lock_body(lock_id)).status_code == 200
        # Not subscribed: another state; and a refused write is never delivered.
        assert (
            http.post(server.state_url("other/x.tfstate"), content=state_json(1)).status_code == 200
        )
        assert http.post(url, content=b"{}").status_code == 400

    receiver.wait_for(3)
    time.sleep(1.5)  # nothing else comes
    assert receiver.types() == [
        "io.statekeeper.lock.acquired",
        "io.statekeeper.state.written",
        "io.statekeeper.lock.released",
    ]
    assert all(d["verified"] for d in receiver.deliveries)
    written = receiver.deliveries[1]
    event = written["event"]
    assert written["content_type"] == "application/cloudevents+json"
    assert event["specversion"] == "1.0"
    assert event["subject"] == NAME
    assert event["id"] == written["event_id"]
    assert event["source"].startswith("statekeeper://127.0.0.1:")
    assert event["data"]["serial"] == 1
    assert event["data"]["lock_id"] == lock_id
    assert event["data"]["who"] == "ci@runner"
    assert event["data"]["resources"] == {
        "added": ["terraform_data.db"],
        "changed": [],
        "removed": [],
    }
    # The delivery log has each one, delivered at the first attempt.
    log = json.loads(statekeeper(workdir, "hooks", "deliveries", "--json"))
    assert sorted((r["type"], r["attempt"], r["status"], r["outcome"]) for r in log) == [
        ("lock.acquired", 1, 200, "delivered"),
        ("lock.released", 1, 200, "delivered"),
        ("state.written", 1, 200, "delivered"),
    ]


def test_a_delivery_carries_the_event_as_the_audit_trail_recorded_it(
    tmp_path: Path, serve: Callable[..., StatekeeperServer], receiver: Receiver
) -> None:
    workdir = tmp_path / "server"
    add_hook(workdir, receiver.url, "--event", "lock.acquired")
    server = serve(workdir=workdir, env=FAST)
    # Longer than an event keeps: recorded cut once, with a note of what was cut.
    who = "runner@" + "w" * 600
    body = lock_body(str(uuid.uuid4()), who=who)
    locked = httpx.request("LOCK", server.state_url(NAME), content=body, timeout=30)
    assert locked.status_code == 200
    receiver.wait_for(1)
    db = sqlite3.connect(workdir / ".statekeeper" / "statekeeper.db")
    try:
        ((text,),) = db.execute("SELECT event FROM audit WHERE event LIKE '%\"lock\"%'")
    finally:
        db.close()
    recorded = json.loads(text)
    assert len(recorded["who"]) <= 256 and recorded["who"].startswith("runner@www")
    cut = int(recorded["who"].rsplit("(", 1)[1].split()[0])
    assert recorded["who"].endswith(f"… ({cut} more characters)") and cut > len(who) - 256
    event = receiver.deliveries[0]["event"]
    assert event["id"] == recorded["id"] and event["time"] == recorded["time"]
    assert {k: event["data"][k] for k in ("who", "actor", "lock_id", "operation")} == {
        k: recorded[k] for k in ("who", "actor", "lock_id", "operation")
    }


def test_an_event_survives_sigkill_before_its_delivery(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    receiver = Receiver()  # not listening yet: every attempt is refused
    add_hook(workdir, receiver.url, "--event", "state.written")
    server = serve(workdir=workdir, env={**FAST, "STATEKEEPER_HOOKS_BACKOFF": "1"})
    written = httpx.post(server.state_url(NAME), content=state_json(1), timeout=30)
    assert written.status_code == 200
    server.kill()  # SIGKILL: no shutdown, nothing flushed

    receiver.start()
    try:
        again = serve(workdir=workdir, env={**FAST, "STATEKEEPER_HOOKS_BACKOFF": "1"})
        receiver.wait_for(1)
        (delivery,) = receiver.deliveries
        assert delivery["verified"]
        assert delivery["event"]["data"]["version"] == written.json()["version_id"]
        audit = httpx.get(again.url + "/api/v1/audit", params={"action": "write"}, timeout=30)
        assert delivery["event"]["id"] == audit.json()["events"][-1]["id"]
    finally:
        receiver.stop()


def test_a_failing_receiver_sees_retries_then_the_dead_letter(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    receiver = Receiver(status=500).start()
    try:
        add_hook(workdir, receiver.url, "--event", "lock.acquired")
        server = serve(workdir=workdir, env={**FAST, "STATEKEEPER_HOOKS_ATTEMPTS": "3"})
        lock = lock_body(str(uuid.uuid4()))
        assert (
            httpx.request("LOCK", server.state_url(NAME), content=lock, timeout=30).status_code
            == 200
        )
        receiver.wait_for(3)
        time.sleep(2)  # no fourth attempt
        assert len(receiver.deliveries) == 3
        # The same event, the same bytes, each time.
        assert len({d["event_id"] for d in receiver.deliveries}) == 1
        assert len({d["body"] for d in receiver.deliveries}) == 1
        metrics = httpx.get(server.url + "/metrics", timeout=30).text
        assert 'statekeeper_queue_failures_total{queue="webhooks"} 3.0' in metrics
        assert 'statekeeper_queue_depth{queue="webhooks"} 0.0' in metrics
    finally:
        receiver.stop()
    dead = json.loads(statekeeper(workdir, "hooks", "deliveries", "--outcome", "dead", "--json"))
    assert [(r["attempt"], r["status"], r["error"]) for r in dead] == [
        (3, 500, "the receiver answered 500")
    ]
    retries = json.loads(
        statekeeper(workdir, "hooks", "deliveries", "--outcome", "retry", "--json")
    )
    assert sorted(r["attempt"] for r in retries) == [1, 2]


def test_two_servers_on_one_database_deliver_each_event_once(
    tmp_path: Path, serve: Callable[..., StatekeeperServer], receiver: Receiver
) -> None:
    workdir = tmp_path / "server"
    add_hook(workdir, receiver.url, "--event", "state.written")
    servers = [serve(workdir=workdir, env=FAST), serve(workdir=workdir, env=FAST)]
    with httpx.Client(timeout=30) as http:
        for i in range(10):
            name = f"team/s{i}.tfstate"
            assert (
                http.post(servers[i % 2].state_url(name), content=state_json(1)).status_code == 200
            )
    receiver.wait_for(10)
    time.sleep(2)
    ids = [d["event_id"] for d in receiver.deliveries]
    assert len(ids) == 10 and len(set(ids)) == 10


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://127.0.0.1:8080/api/v1/tokens",
        "http://[::1]:8080/api/v1/tokens",
        "http://[::ffff:127.0.0.1]:8080/api/v1/tokens",
        "http://[fe80::1]/",
    ],
)
def test_the_guard_refuses_loopback_and_metadata_destinations(tmp_path: Path, url: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "statekeeper", "hooks", "add", "x", "--url", url],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "deliveries may not go there" in proc.stderr or "metadata" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("host", "named"),
    [
        ("[::ffff:127.0.0.1]", "127.0.0.1, a loopback address"),
        ("[::ffff:169.254.169.254]", "169.254.169.254, a link-local or cloud metadata address"),
        ("[fe80::1]", "fe80::1, a link-local or cloud metadata address"),
    ],
)
def test_the_guard_names_what_an_ipv6_form_reaches(host: str, named: str) -> None:
    with pytest.raises(BadRequest) as refused:
        destinations(f"http://{host}/hook", ())
    assert f"resolves to {named}" in str(refused.value)
