"""The operator commands on S3 + DynamoDB and S3 + lock files (a moto server over HTTP),
on states written by Terraform's own ``backend "s3"`` and through our server."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.cli.support import CONFIG, embedded_store

from statekeeper.testing.processes import MotoServer, StatekeeperServer
from statekeeper.testing.terraform import Terraform

pytestmark = [pytest.mark.terraform, pytest.mark.aws]

CliFn = Callable[..., Any]
BUCKET = "ops-tfstate"
TABLE = "ops-locks"
KEY = "team/app.tfstate"
WHO = f"{getpass.getuser()}@{socket.gethostname()}"


@pytest.fixture
def aws(moto: MotoServer) -> tuple[Any, Any]:
    """A versioned bucket and a lock table, and boto3 clients to look at them."""
    moto.versioned_bucket(BUCKET)
    moto.lock_table(TABLE)
    return moto.client("s3"), moto.client("dynamodb")


def s3_backend(moto: MotoServer, mode: str, key: str = KEY) -> str:
    locking = {
        "dynamodb": [f'dynamodb_table = "{TABLE}"'],
        "lockfile": ["use_lockfile = true"],
        "both": [f'dynamodb_table = "{TABLE}"', "use_lockfile = true"],
    }[mode]
    return moto.s3_backend_block(BUCKET, key, *locking)


def store_args(mode: str) -> list[str]:
    locks = {
        "dynamodb": ["--locks", f"dynamodb://{TABLE}"],
        "lockfile": ["--locks", f"s3lock://{BUCKET}"],
        "both": ["--locks", f"s3lock://{BUCKET}", "--locks", f"dynamodb://{TABLE}"],
    }[mode]
    return ["--store", f"s3://{BUCKET}", *locks]


def _json(cli: CliFn, *args: str) -> Any:
    r = cli(*args)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_rollback_of_a_terraform_native_state_keeps_the_digest_right(
    aws: tuple[Any, Any], moto: MotoServer, terraform: Callable[..., Terraform], cli_process: CliFn
) -> None:
    s3, ddb = aws
    tf = terraform().write(s3_backend(moto, "dynamodb") + CONFIG)
    tf.run("init").check()
    tf.run("apply", "-var", "v=one").check()
    tf.run("apply", "-var", "v=two").check()
    ops = store_args("dynamodb")

    (row,) = _json(cli_process, *ops, "states", "--json")
    assert row["name"] == KEY and row["serial"] is None, "the listing downloads nothing"
    (row,) = _json(cli_process, *ops, "states", "--details", "--json")
    assert row["serial"] == 2 and row["versions"] == 2
    history = _json(cli_process, *ops, "history", KEY, "--json")
    assert [h["serial"] for h in history] == [2, 1] and history[0]["actor"] is None
    d = _json(cli_process, *ops, "diff", KEY, "--json")
    assert d["outputs"][0]["before"] == "one" and d["outputs"][0]["after"] == "two"

    r = cli_process(*ops, "rollback", KEY, "--to", history[1]["version_id"], "--yes", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["version"]["serial"] == 3

    body = s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()
    assert json.loads(body)["serial"] == 3
    assert cli_process(*ops, "pull", KEY).stdout_bytes == body
    pulled_old = cli_process(*ops, "pull", KEY, "--version", "serial:1").stdout_bytes
    old = s3.get_object(Bucket=BUCKET, Key=KEY, VersionId=history[1]["version_id"])["Body"].read()
    assert pulled_old == old
    assert body == old.replace(b'"serial": 1,', b'"serial": 3,', 1)
    digest = ddb.get_item(TableName=TABLE, Key={"LockID": {"S": f"{BUCKET}/{KEY}-md5"}})["Item"]
    assert digest["Digest"]["S"] == hashlib.md5(body).hexdigest()

    plan = tf.run("plan", "-detailed-exitcode", "-var", "v=two")
    assert plan.returncode == 2, plan.output
    assert "checksum" not in plan.output.lower()
    assert '"one" -> "two"' in plan.stdout
    assert tf.run("plan", "-detailed-exitcode", "-var", "v=one").returncode == 0
    tf.run("apply", "-var", "v=three").check()
    assert _json(cli_process, *ops, "history", KEY, "--json")[0]["serial"] == 4


@pytest.mark.parametrize("mode", ["dynamodb", "lockfile"])
def test_a_killed_applys_lock_is_listed_removed_and_the_next_apply_runs(
    mode: str,
    aws: tuple[Any, Any],
    moto: MotoServer,
    terraform: Callable[..., Terraform],
    cli_process: CliFn,
) -> None:
    tf = terraform().write(s3_backend(moto, mode) + CONFIG)
    tf.run("init").check()
    ops = store_args(mode)
    proc = tf.start("apply", "-var", "v=one", "-var", "sleep=120")
    try:
        locks: list[dict[str, Any]] = []
        deadline = time.monotonic() + 120
        while not locks and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
            locks = _json(cli_process, *ops, "locks", "--json")
        assert locks, "the apply never took the lock"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    (lock,) = _json(cli_process, *ops, "locks", "--json")
    assert (lock["name"], lock["who"], lock["operation"]) == (KEY, WHO, "OperationTypeApply")
    assert lock["path"] == f"{BUCKET}/{KEY}" and lock["age_seconds"] >= 0
    assert lock["kinds"] == (["dynamodb"] if mode == "dynamodb" else ["s3lock"])
    assert tf.run("apply", "-var", "v=two").returncode != 0

    if mode == "dynamodb":
        r = cli_process(*ops, "unlock", KEY, "--force", "--json")
    else:
        r = cli_process(*ops, "locks", "reap", "--older-than", "0s", "--json")
    assert r.exit_code == 0, r.stderr
    assert lock["id"] in r.stdout
    assert _json(cli_process, *ops, "locks", "--json") == []
    tf.run("apply", "-var", "v=two").check()
    shown = _json(cli_process, *ops, "show", KEY, "--json")
    assert shown["outputs"]["o"]["value"] == "two"


def test_dual_lock_drift_is_flagged_and_removed(
    aws: tuple[Any, Any], moto: MotoServer, cli_process: CliFn
) -> None:
    from statekeeper.storage.registry import open_locks, open_store
    from statekeeper.terraform.lockinfo import LockInfo

    store = open_store(f"s3://{BUCKET}")
    only_ddb = open_locks(f"dynamodb://{TABLE}", store)
    both = open_locks([f"s3lock://{BUCKET}", f"dynamodb://{TABLE}"], store)
    stray = LockInfo.new("OperationTypeApply", "bob@ci", path=f"{BUCKET}/{KEY}")
    only_ddb.acquire(KEY, stray)
    fine = LockInfo.new("OperationTypePlan", "carol@ci")
    both.acquire("other.tfstate", fine)
    ops = store_args("both")

    rows = {r["name"]: r for r in _json(cli_process, *ops, "locks", "--json")}
    assert rows[KEY]["drift"] and rows[KEY]["missing"] == ["s3lock"]
    assert rows[KEY]["kinds"] == ["dynamodb"] and rows[KEY]["who"] == "bob@ci"
    assert not rows["other.tfstate"]["drift"]
    assert sorted(rows["other.tfstate"]["kinds"]) == ["dynamodb", "s3lock"]
    listing = cli_process(*ops, "locks")
    assert "drift" in listing.stdout and "warning" in listing.stderr

    r = cli_process(*ops, "unlock", KEY, "--id", stray.id)
    assert r.exit_code == 0, r.stderr
    assert [r["name"] for r in _json(cli_process, *ops, "locks", "--json")] == ["other.tfstate"]
    store.close()


def test_migrate_a_local_state_into_s3_and_history_between_stores(
    aws: tuple[Any, Any],
    moto: MotoServer,
    terraform: Callable[..., Terraform],
    cli_process: CliFn,
    serve: Callable[..., StatekeeperServer],
    tmp_path: Path,
) -> None:
    s3, _ = aws
    # A local state file written by Terraform, into S3 + DynamoDB; Terraform reads it there.
    local = terraform("local").write(CONFIG)
    local.run("init").check()
    local.run("apply", "-var", "v=local").check()
    file = local.workdir / "terraform.tfstate"
    r = cli_process(*store_args("dynamodb"), "migrate", "--from", str(file), "--name", KEY)
    assert r.exit_code == 0, r.stderr
    assert s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read() == file.read_bytes()
    remote = terraform("remote").write(s3_backend(moto, "dynamodb") + CONFIG)
    remote.run("init").check()
    plan = remote.run("plan", "-detailed-exitcode", "-var", "v=local")
    assert plan.returncode == 0, plan.output

    # History written through our server (SQLite), to S3 with lock files, and back.
    server = serve()
    tf = terraform("http").write(server.backend_block("svc.tfstate") + CONFIG)
    tf.run("init").check()
    for v in ("a", "b", "c"):
        tf.run("apply", "-var", f"v={v}").check()
    sqlite = embedded_store(server)
    to_s3 = ["migrate", "--from", sqlite, "--to", f"s3://{BUCKET}", "--with-history", "--json"]
    report = _json(cli_process, *to_s3)
    assert report["copied"] == 3
    listed = s3.list_object_versions(Bucket=BUCKET, Prefix="svc.tfstate")["Versions"]
    versions = [v for v in listed if v["Key"] == "svc.tfstate"]
    in_s3 = [
        s3.get_object(Bucket=BUCKET, Key="svc.tfstate", VersionId=v["VersionId"])["Body"].read()
        for v in reversed(versions)  # listed newest first
    ]
    from_server = [
        cli_process(
            "--store", sqlite, "pull", "svc.tfstate", "--version", f"serial:{n}"
        ).stdout_bytes
        for n in (1, 2, 3)
    ]
    assert in_s3 == from_server
    assert _json(cli_process, *to_s3)["copied"] == 0, "a second run finds everything present"

    back = f"sqlite:///{tmp_path / 'back.db'}"
    r = cli_process("migrate", "--from", f"s3://{BUCKET}", "--to", back, "--with-history", "--json")
    assert json.loads(r.stdout)["copied"] == 4  # svc (3) and team/app (1)
    hist = _json(cli_process, "--store", back, "history", "svc.tfstate", "--json")
    pulled = [
        cli_process(
            "--store", back, "pull", "svc.tfstate", "--version", h["version_id"]
        ).stdout_bytes
        for h in reversed(hist)
    ]
    assert pulled == from_server


def test_states_of_a_server_on_s3_with_workspaces(
    aws: tuple[Any, Any],
    moto: MotoServer,
    terraform: Callable[..., Terraform],
    serve: Callable[..., StatekeeperServer],
    cli_process: CliFn,
) -> None:
    server = serve("--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}", env=moto.env())
    tf = terraform("http").write(server.backend_block("svc.tfstate") + CONFIG)
    tf.run("init").check()
    tf.run("apply", "-var", "v=a").check()
    tf.run("apply", "-var", "v=b").check()
    native = terraform("native").write(s3_backend(moto, "dynamodb") + CONFIG)
    native.run("init").check()
    native.run("workspace", "new", "dev").check()
    native.run("apply", "-var", "v=dev").check()

    ops = store_args("dynamodb")
    names = [r["name"] for r in _json(cli_process, *ops, "states", "--json")]
    # Grouped by backend key: env:/dev/team/app.tfstate is the dev workspace of team/…
    assert names == ["svc.tfstate", f"env:/dev/{KEY}"]
    under = _json(cli_process, *ops, "states", "team/", "--json")
    assert [(r["name"], r["workspace"]) for r in under] == [(f"env:/dev/{KEY}", "dev")]
    history = _json(cli_process, *ops, "history", "svc.tfstate", "--json")
    assert [h["serial"] for h in history] == [2, 1] and history[0]["actor"] == "anonymous"
    d = _json(cli_process, *ops, "diff", f"env:/dev/{KEY}", "--json")
    assert d["from"] is None or d["added"] == ["terraform_data.a"]
    through_api = _json(cli_process, "--server", server.url, "states", "--json")
    assert [r["name"] for r in through_api] == names


def test_states_on_s3_takes_the_serials_from_the_inventory_index(
    aws: tuple[Any, Any], moto: MotoServer, cli_process: CliFn
) -> None:
    from statekeeper.testing.statefiles import state_bytes

    s3, _ = aws
    ops = store_args("dynamodb")
    # One state statekeeper wrote (serial in its metadata), one Terraform's own backend
    # wrote (no metadata: the serial is only in the bytes).
    assert cli_process(*ops, "push", "ours.tfstate", "-", input=state_bytes(7)).exit_code == 0
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=state_bytes(4))

    listed = _json(cli_process, *ops, "states", "--json")
    assert [(r["name"], r["serial"], r["serial_known"]) for r in listed] == [
        ("ours.tfstate", None, False),
        (KEY, None, False),
    ], "no index yet, and the listing carries no metadata: unknown, not none"
    cold = cli_process(*ops, "states")
    assert "2 serial(s) unknown" in cold.stderr and "--details" in cold.stderr
    # Once an index is on disk ('search' builds it), the listing takes the serials from it.
    assert cli_process(*ops, "search", "--counts").exit_code == 0
    listed = _json(cli_process, *ops, "states", "--json")
    assert [(r["name"], r["serial"], r["serial_known"]) for r in listed] == [
        ("ours.tfstate", 7, True),
        (KEY, 4, True),
    ], "a listing of S3 carries no serial; the index caught up and read it"
    table = cli_process(*ops, "states")
    # Piped: tab-separated NAME, WORKSPACE, SERIAL, ...
    rows = [line.split("\t")[:3] for line in table.stdout.splitlines()[1:]]
    assert rows == [["ours.tfstate", "-", "7"], [KEY, "-", "4"]]
    assert "unknown" not in table.stderr

    detailed = _json(cli_process, *ops, "states", "--details", "--json")
    assert [(r["serial"], r["serial_known"], r["versions"]) for r in detailed] == [
        (7, True, 1),
        (4, True, 1),
    ]
    assert "unknown" not in cli_process(*ops, "states", "--details").stderr

    # An object the index cannot read as a state: its serial is unknown, not none.
    s3.put_object(Bucket=BUCKET, Key="junk.tfstate", Body=b"not a state")
    table = cli_process(*ops, "states")
    rows = [line.split("\t")[:3] for line in table.stdout.splitlines()[1:]]
    assert ["junk.tfstate", "-", "?"] in rows
    assert "1 serial(s) unknown" in table.stderr
