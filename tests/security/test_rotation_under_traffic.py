"""`encryption rotate` while a server serves writes, on SQLite and on S3.

The server started with the old key keeps sealing with it. A data key it
stored after the rotation read the key ring used to stay under the retired
key: after the documented restart with the new key, those versions (the
current one among them) could not be read, and no later rotation could
re-wrap them. Now the rotation re-reads the ring after retiring the old key,
and the server refuses, with a message saying to restart, a write it would
seal under a retired key; every write it accepted reads back with the new key.

A server started with ``old,new`` before the rotation takes every write through
it: it seals with the new key from the write that finds the old one retired.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest
from tests.security.support import key_files, lock_body, state_json

from statekeeper.testing.processes import SRC, MotoServer, StatekeeperServer
from statekeeper.testing.terraform import Terraform, TerraformResult

STATE = "team/a.tfstate"


def _cli(workdir: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", *args],
        cwd=workdir,
        env={**clean, "PYTHONPATH": str(SRC), "COLUMNS": "250", **env},
        capture_output=True,
        timeout=120,
    )


class _Writer(threading.Thread):
    """Terraform's LOCK, POST, UNLOCK cycle in a loop; what each POST was answered."""

    def __init__(self, server: StatekeeperServer, after: int = 0) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.after = after
        self.stopping = threading.Event()
        self.answers: dict[int, httpx.Response] = {}

    def run(self) -> None:
        url = self.server.state_url(STATE)
        with httpx.Client(timeout=60) as client:
            serial = self.after
            while not self.stopping.is_set():
                serial += 1
                lock_id = f"rotate-{serial}"
                assert client.request("LOCK", url, content=lock_body(lock_id)).status_code == 200
                self.answers[serial] = client.post(
                    f"{url}?ID={lock_id}", content=state_json(serial)
                )
                assert client.request("UNLOCK", url, content=lock_body(lock_id)).status_code == 200

    def written(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.answers) < count:
            assert self.is_alive() and time.monotonic() < deadline
            time.sleep(0.05)


def _store(
    backend: str, request: pytest.FixtureRequest, bucket: str
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The store options and environment of ``backend``: the data dir's SQLite, or a
    versioned bucket on the moto server."""
    if backend == "sqlite":
        return (), {}
    moto: MotoServer = request.getfixturevalue("moto")
    return ("--store", f"s3://{moto.versioned_bucket(bucket)}/states"), moto.env()


def _rotate_mid_traffic(
    writer: _Writer,
    workdir: Path,
    old: Path,
    new: Path,
    args: tuple[str, ...],
    aws: dict[str, str],
) -> None:
    """``encryption rotate`` from ``old`` to ``new`` after 20 of ``writer``'s writes, then
    20 more writes, and the writer stopped."""
    writer.written(20)
    _rotate(workdir, old, new, args, aws)
    writer.written(len(writer.answers) + 20)
    writer.stopping.set()
    writer.join()


@pytest.mark.parametrize("backend", ["sqlite", "s3"])
def test_rotation_under_traffic_loses_no_version(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    serve: Callable[..., StatekeeperServer] = request.getfixturevalue("serve")
    args, aws = _store(backend, request, "rot")
    workdir = tmp_path / "server"
    old, new = key_files(tmp_path, "old.key", "new.key")
    server = serve(*args, env={**aws, "STATEKEEPER_MASTER_KEY_FILE": str(old)}, workdir=workdir)
    writer = _Writer(server)
    writer.start()
    _rotate_mid_traffic(writer, workdir, old, new, args, aws)

    accepted = [s for s, r in writer.answers.items() if r.status_code == 200]
    refused = {s: r for s, r in writer.answers.items() if r.status_code != 200}
    server.stop()

    new_env = {**aws, "STATEKEEPER_MASTER_KEY_FILE": str(new)}
    server = serve(*args, env=new_env, workdir=workdir)
    history = httpx.get(f"{server.url}/api/v1/versions/{STATE}").json()
    assert sorted(v["serial"] for v in history) == accepted
    for serial in accepted[:3] + accepted[-3:]:
        got = httpx.get(f"{server.url}/api/v1/content/{STATE}?version=serial:{serial}")
        assert got.status_code == 200, got.text
        assert got.content == state_json(serial)
        pulled = _cli(workdir, "pull", STATE, "--version", f"serial:{serial}", *args, env=new_env)
        assert pulled.returncode == 0, pulled.stderr
        assert pulled.stdout == state_json(serial)
    # Every accepted version, through the server with the new key alone.
    for serial in accepted:
        got = httpx.get(f"{server.url}/api/v1/content/{STATE}?version=serial:{serial}")
        assert got.content == state_json(serial), (serial, got.text)
    # Refused only once the rotation retired the server's key, each saying what to do.
    assert refused and min(refused) > 20
    assert all(s in refused for s in range(min(refused), max(writer.answers) + 1))
    for answer in refused.values():
        assert answer.status_code == 500
        message = answer.json()["message"]
        assert "retired while it ran" in message and "Restart it" in message
    # The write refused during the rotation goes through on the restarted server.
    next_serial = max(accepted) + 1
    url = server.state_url(STATE)
    assert httpx.request("LOCK", url, content=lock_body("after")).status_code == 200
    assert httpx.post(f"{url}?ID=after", content=state_json(next_serial)).status_code == 200
    assert httpx.request("UNLOCK", url, content=lock_body("after")).status_code == 200
    assert httpx.get(url).content == state_json(next_serial)
    server.stop()

    status = _cli(workdir, "encryption", "status", *args, env=new_env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert b"no state is stored in plaintext" in status.stdout
    audit = _cli(workdir, "audit", "--action", "key-rotate", "--json", *args, env=new_env)
    assert audit.returncode == 0, audit.stderr
    assert [e["action"] for e in json.loads(audit.stdout)] == ["key-rotate"]


@pytest.mark.parametrize("backend", ["sqlite", "s3"])
def test_a_server_given_the_next_key_writes_through_the_rotation(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    serve: Callable[..., StatekeeperServer] = request.getfixturevalue("serve")
    args, aws = _store(backend, request, "next")
    workdir = tmp_path / "server"
    old, new = key_files(tmp_path, "old.key", "new.key")
    server = serve(*args, env={**aws, "STATEKEEPER_MASTER_KEY_FILE": str(old)}, workdir=workdir)
    writer = _Writer(server)
    writer.start()
    writer.written(5)
    writer.stopping.set()
    writer.join()
    server.stop()
    assert all(r.status_code == 200 for r in writer.answers.values())
    # Restarted with the next key beside the store's, before the rotation.
    both = {"STATEKEEPER_MASTER_KEY": f"{old.read_text().strip()},{new.read_text().strip()}"}
    server = serve(*args, env={**aws, **both}, workdir=workdir)
    writer = _Writer(server, after=max(writer.answers))
    writer.start()
    _rotate_mid_traffic(writer, workdir, old, new, args, aws)
    server.stop()

    refused = {s: r.text for s, r in writer.answers.items() if r.status_code != 200}
    assert not refused
    new_env = {**aws, "STATEKEEPER_MASTER_KEY_FILE": str(new)}
    server = serve(*args, env=new_env, workdir=workdir)
    history = httpx.get(f"{server.url}/api/v1/versions/{STATE}").json()
    accepted = sorted(writer.answers)
    assert sorted(v["serial"] for v in history) == list(range(1, accepted[-1] + 1))
    for serial in range(1, accepted[-1] + 1):
        got = httpx.get(f"{server.url}/api/v1/content/{STATE}?version=serial:{serial}")
        assert got.status_code == 200, (serial, got.text)
        assert got.content == state_json(serial)
    server.stop()
    status = _cli(workdir, "encryption", "status", *args, env=new_env)
    assert status.returncode == 0, status.stdout + status.stderr


# Each apply replaces the resource (its input is the run's number): one new version.
COUNTER = """
variable "n" { type = number }
resource "terraform_data" "run" { input = var.n }
output "n" { value = terraform_data.run.output }
"""


class _Applies(threading.Thread):
    """``terraform apply -var n=N`` for N = 1, 2, … through ``server`` until told to
    stop or one fails; each run's result."""

    def __init__(self, tf: Terraform) -> None:
        super().__init__(daemon=True)
        self.tf = tf
        self.stopping = threading.Event()
        self.results: list[TerraformResult] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            result = self.tf.run("apply", "-var", f"n={len(self.results) + 1}", timeout=80)
            self.results.append(result)
            if result.returncode != 0:
                return

    def done(self, count: int) -> None:
        deadline = time.monotonic() + 80
        while len(self.results) < count and self.is_alive():
            assert time.monotonic() < deadline, [r.output for r in self.results]
            time.sleep(0.1)


def _terraform(
    server: StatekeeperServer, workdir: Path, name: str = STATE
) -> tuple[Terraform, _Applies]:
    tf = Terraform(workdir).write(server.backend_block(name) + COUNTER)
    tf.run("init").check()
    return tf, _Applies(tf)


def _restart(
    server: StatekeeperServer, env: dict[str, str], request: pytest.FixtureRequest
) -> StatekeeperServer:
    """``server`` stopped and started again on its port (Terraform's backend address)
    with ``env``."""
    server.stop()
    again = StatekeeperServer(server.workdir, *server.args, env=env, port=server.port)
    request.addfinalizer(again.stop)
    return again.start()


def _rotate(workdir: Path, old: Path, new: Path, args: Sequence[str], aws: dict[str, str]) -> None:
    """``statekeeper encryption rotate`` from ``old`` to ``new``, as the operator runs it."""
    rotated = _cli(
        workdir,
        "encryption",
        "rotate",
        "--old-key-file",
        str(old),
        "--new-key-file",
        str(new),
        *args,
        env=aws,
    )
    assert rotated.returncode == 0, rotated.stderr


def _every_version_reads_back(server: StatekeeperServer, count: int) -> None:
    """The state's history holds ``count`` versions, each read back whole."""
    history = httpx.get(f"{server.url}/api/v1/versions/{STATE}").json()
    assert len(history) == count
    for version in history:
        got = httpx.get(f"{server.url}/api/v1/content/{STATE}?version={version['version_id']}")
        assert got.status_code == 200, got.text
        assert json.loads(got.content)["serial"] == version["serial"]


def _outputs(tf: Terraform) -> int:
    return int(json.loads(tf.run("output", "-json").check().stdout)["n"]["value"])


@pytest.mark.terraform
@pytest.mark.parametrize("backend", ["sqlite", "s3"])
def test_terraform_applies_through_a_rotation_with_old_and_new_keys(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    serve: Callable[..., StatekeeperServer] = request.getfixturevalue("serve")
    args, aws = _store(backend, request, "tfnext")
    workdir = tmp_path / "server"
    old, new = key_files(tmp_path, "old.key", "new.key")
    # The documented zero-downtime rotation: the server restarted with old,new first.
    both = {"STATEKEEPER_MASTER_KEY": f"{old.read_text().strip()},{new.read_text().strip()}"}
    server = serve(*args, env={**aws, **both}, workdir=workdir)
    tf, applies = _terraform(server, tmp_path / "tf")
    applies.start()
    applies.done(2)
    _rotate(workdir, old, new, args, aws)
    applies.done(len(applies.results) + 2)
    applies.stopping.set()
    applies.join(80)
    for result in applies.results:
        assert "Apply complete!" in result.check().stdout
    last = len(applies.results)

    # With the new key alone: nothing to change, and every version reads back.
    server = _restart(server, {**aws, "STATEKEEPER_MASTER_KEY_FILE": str(new)}, request)
    planned = tf.run("plan", "-detailed-exitcode", "-var", f"n={last}")
    assert planned.returncode == 0, planned.output
    assert "No changes." in planned.stdout
    assert _outputs(tf) == last
    _every_version_reads_back(server, last)
    assert "Traceback" not in server.log()


@pytest.mark.terraform
@pytest.mark.parametrize("backend", ["sqlite", "s3"])
def test_terraform_through_a_server_left_on_the_old_key_fails_cleanly_and_loses_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    serve: Callable[..., StatekeeperServer] = request.getfixturevalue("serve")
    args, aws = _store(backend, request, "tfold")
    workdir = tmp_path / "server"
    old, new = key_files(tmp_path, "old.key", "new.key")
    server = serve(*args, env={**aws, "STATEKEEPER_MASTER_KEY_FILE": str(old)}, workdir=workdir)
    tf, applies = _terraform(server, tmp_path / "tf")
    applies.start()
    applies.done(2)
    _rotate(workdir, old, new, args, aws)
    applies.join(80)  # it stops at the first apply the server refuses
    *accepted, refused = applies.results
    assert len(accepted) >= 2 and all(r.returncode == 0 for r in accepted)

    # Terraform's own account of the refusal: its write failed, the state it could not
    # push is kept in errored.tfstate, and its lock was released.
    assert refused.returncode == 1, refused.output
    # (Terraform's HTTP backend prints no answer body: the reason is the server's log.)
    assert "Failed to save state" in refused.stderr, refused.output
    assert "giving up after 3 attempt(s)" in refused.stderr
    assert "terraform state push errored.tfstate" in refused.stderr
    assert "Error releasing the state lock" not in refused.output
    assert (tf.workdir / "errored.tfstate").exists()
    assert httpx.get(f"{server.url}/api/v1/locks").json() == []
    log = server.log()
    assert "retired while it ran" in log and "Traceback" not in log

    # Restarted with the new key: the stored state is the last accepted apply's, whole.
    server = _restart(server, {**aws, "STATEKEEPER_MASTER_KEY_FILE": str(new)}, request)
    last = len(accepted)
    planned = tf.run("plan", "-detailed-exitcode", "-var", f"n={last}")
    assert planned.returncode == 0 and "No changes." in planned.stdout, planned.output
    _every_version_reads_back(server, last)
    # The documented recovery: push what Terraform kept, and the refused run is stored.
    tf.run("state", "push", "errored.tfstate").check()
    planned = tf.run("plan", "-detailed-exitcode", "-var", f"n={last + 1}")
    assert planned.returncode == 0 and "No changes." in planned.stdout, planned.output
    assert _outputs(tf) == last + 1
    assert "Traceback" not in server.log()
