"""The policy `statekeeper iam-policy` prints, enforced: a server runs under exactly it.

A moto server of its own checks every request against the IAM user's policy
once the first three (an administrator made without credentials) have passed.
The administrator sets up the bucket and the table; `statekeeper serve`, the
operator CLI and Terraform (through the server) then run with the keys of a
user holding the printed policy and nothing else but the names moto checks in
place of AWS's (:func:`as_moto_checks`). Every operation the product makes
under the policy must succeed, and what the policy leaves out must be refused
with a message naming the action, never a traceback.

moto evaluates no ``Condition`` of an identity policy (a statement with one
denies), so the policies here name no ``--prefix`` and no KMS alias.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from tests.hooks.test_webhooks import FAST, SECRET, Receiver, receiver  # noqa: F401
from tests.security.support import state_json

from statekeeper.awssetup.iam import iam_policy
from statekeeper.security.signouts import open_signouts, session_id
from statekeeper.storage.aws import _boto
from statekeeper.storage.registry import open_store
from statekeeper.terraform.layout import SIGNOUTS_PREFIX, WEBHOOKS_PREFIX
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.testing.processes import SRC, MotoServer, StatekeeperServer
from statekeeper.testing.terraform import Terraform

pytestmark = [pytest.mark.aws, pytest.mark.terraform]

TABLE = "tf-locks"
NAME = "team/app.tfstate"
OTHER = "team/other.tfstate"
RESOURCES = """
resource "terraform_data" "app" { input = "app-v1" }
output "app" { value = terraform_data.app.output }
"""

# moto 5.2 authorizes these S3 calls by their API name instead of the IAM action AWS
# checks for them (HeadObject: s3:GetObject; ListObjectsV2 and HeadBucket, the readiness
# probe: s3:ListBucket): a statement granting the action is granted those API names too,
# on the same resource. (The calls on versions are checked by their IAM actions: see
# MotoServer.)
MOTO_API_NAMES = {
    "s3:GetObject": ["s3:HeadObject"],
    "s3:ListBucket": ["s3:ListObjectsV2", "s3:HeadBucket"],
}


def as_moto_checks(policy: dict[str, Any]) -> dict[str, Any]:
    """``policy`` with what moto checks in place of AWS's checks, and nothing more."""
    extra: list[dict[str, Any]] = []
    for statement in policy["Statement"]:
        actions = statement["Action"]
        actions = [actions] if isinstance(actions, str) else actions
        names = [name for a in actions for name in MOTO_API_NAMES.get(a, [])]
        if names:
            extra.append({**statement, "Sid": statement["Sid"] + "MotoNames", "Action": names})
        if statement["Resource"].startswith("arn:aws:dynamodb:"):
            # moto checks every DynamoDB call against the resource "*", never the table's
            # ARN: the same actions, on the one table moto holds.
            extra.append({**statement, "Sid": statement["Sid"] + "MotoResource", "Resource": "*"})
    return {**policy, "Statement": policy["Statement"] + extra}


@dataclass
class Enforcing:
    """A moto server enforcing IAM, and its administrator's clients."""

    moto: MotoServer
    admin: dict[str, str]

    def client(self, service: str) -> Any:
        """The administrator's client: set-up and looking, past every policy."""
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.moto.url,
            region_name="us-east-1",
            aws_access_key_id=self.admin["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.admin["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(self, name: str) -> str:
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def user(self, name: str, policy: dict[str, Any]) -> dict[str, str]:
        """The environment of a new IAM user holding ``policy`` (as moto checks it)."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        document = json.dumps(as_moto_checks(policy))
        iam.put_user_policy(UserName=name, PolicyName="statekeeper", PolicyDocument=document)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return self.moto.env() | {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }

    def versions(self, bucket: str, prefix: str) -> list[tuple[str, bool]]:
        """Every version and delete marker under ``prefix``: (key, is a marker)."""
        listed = self.client("s3").list_object_versions(Bucket=bucket, Prefix=prefix)
        return [(v["Key"], False) for v in listed.get("Versions", [])] + [
            (m["Key"], True) for m in listed.get("DeleteMarkers", [])
        ]


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enforcing]:
    # The first three requests (the administrator's making, below) pass unchecked.
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    try:
        moto = MotoServer(tmp_path_factory.mktemp("moto-iam")).start()
    finally:
        del os.environ["INITIAL_NO_AUTH_ACTION_COUNT"]
    try:
        iam = moto.client("iam")
        iam.create_user(UserName="admin")
        everything = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        iam.put_user_policy(
            UserName="admin",
            PolicyName="admin",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [everything]}),
        )
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        admin = {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
        enforcing = Enforcing(moto, admin)
        # Enforced from here on: the administrator's own calls pass its policy.
        enforcing.client("dynamodb").create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield enforcing
    finally:
        moto.stop()


def operator(
    env: dict[str, str], workdir: Path, *args: str, code: int = 0
) -> subprocess.CompletedProcess[str]:
    """The operator CLI, as a person runs it with ``env``'s credentials."""
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "statekeeper", *args],
        cwd=workdir,
        env={**os.environ, **env, **FAST, "PYTHONPATH": str(SRC), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done


def wait_until(what: str, ready: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_everything_the_server_does_under_the_printed_policy(
    enforcing: Enforcing,
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    receiver: Receiver,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = enforcing.bucket("tfstate-enforced")
    env = enforcing.user("terraform", iam_policy(bucket, table=TABLE))
    store = ("--store", f"s3://{bucket}", "--locks", f"dynamodb://{TABLE}")
    operator(env, tmp_path, "hooks", "add", "ci", "--url", receiver.url, "--secret", SECRET, *store)
    # The delivery log kept 2 s: its expiry erases the attempts with their versions too.
    server = serve(*store, env={**env, **FAST, "STATEKEEPER_HOOKS_DELIVERIES_KEPT": "2s"})
    # Versioning was readable: the server keeps history (ReadVersioning).
    assert "keeps no state history" not in server.log()

    tf = Terraform(tmp_path / "tf").write(server.backend_block(NAME) + RESOURCES)
    tf.run("init").check()
    tf.run("apply").check()
    assert "No changes" in tf.run("plan").check().stdout

    with httpx.Client(base_url=server.url, timeout=30) as http:
        # Writes, reads and the history of versions.
        for serial in (1, 2):
            posted = http.post(f"/state/{OTHER}", content=state_json(serial))
            assert posted.status_code == 200, posted.text
        versions = http.get(f"/api/v1/versions/{OTHER}").json()
        assert [v["serial"] for v in versions] == [2, 1]
        first = versions[-1]["version_id"]
        old = http.get(f"/api/v1/content/{OTHER}", params={"version": first})
        assert old.status_code == 200 and json.loads(old.content)["serial"] == 1
        diff = http.get(f"/api/v1/diff/{OTHER}", params={"from": first})
        assert diff.status_code == 200, diff.text
        rolled = http.post(f"/api/v1/rollback/{OTHER}", json={"to": "serial:1"})
        assert rolled.status_code == 200, rolled.text
        assert http.get("/readyz").status_code == 200, http.get("/readyz").text

        # A lock held by another run: Terraform is refused, then force-unlocks it.
        held = LockInfo.new("OperationTypeApply", "someone-else")
        assert http.request("LOCK", f"/state/{NAME}", content=held.body).status_code == 200
        assert http.get("/api/v1/locks").json()[0]["id"] == held.id
        refused = tf.run("plan", "-lock-timeout=0s")
        assert refused.returncode != 0 and "someone-else" in refused.output
        tf.run("force-unlock", "-force", held.id).check()
        assert http.get("/api/v1/locks").json() == []
        tf.run("apply").check()

        # What the policy leaves out (no --allow-delete): refused, naming the action.
        deleted = http.delete(f"/state/{OTHER}")
        assert deleted.status_code == 502
        assert deleted.json()["error"] == "storage_access_denied"
        assert f"s3:DeleteObject on s3://{bucket}/{OTHER}" in deleted.json()["message"]
        assert http.get(f"/state/{OTHER}").status_code == 200

    # Every event delivered once, and its outbox entry erased with every version
    # (each claim wrote one): DeliverWebhooks' s3:DeleteObjectVersion.
    receiver.wait_for(1)
    wait_until(
        "the outbox entries are erased with their versions",
        lambda: not enforcing.versions(bucket, WEBHOOKS_PREFIX + "outbox/"),
    )
    wait_until(
        "the delivery log expires, erased with its versions",
        lambda: not enforcing.versions(bucket, WEBHOOKS_PREFIX + "deliveries/"),
    )
    assert "io.statekeeper.state.written" in receiver.types()
    ids = [d["event_id"] for d in receiver.deliveries]
    assert len(ids) == len(set(ids))
    assert all(d["verified"] for d in receiver.deliveries)
    server.stop()
    assert "Traceback" not in server.log()
    assert "versions stay" not in server.log()
    # A subscription removed is erased with its versions too.
    operator(env, tmp_path, "hooks", "remove", "ci", *store)
    assert not enforcing.versions(bucket, WEBHOOKS_PREFIX + "subscriptions/")

    # Operators: pruning removes versions of states, which no statement grants.
    config = tmp_path / "keep1.toml"
    config.write_text('[history]\n[[history.retention]]\nstates = "**"\nkeep_last = 1\n')
    pruned = operator(env, tmp_path, "--config", str(config), "prune", *store, code=1)
    assert "s3:DeleteObjectVersion" in pruned.stderr
    assert len(enforcing.versions(bucket, OTHER)) == 3

    # A UI sign-out and the expiry of the older ones (ExpireSignOuts), as the server
    # records them, with the user's credentials.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # A process keeps the boto3 session its first client made (credentials and all);
    # this one's were made by earlier tests with other credentials: start afresh, as a
    # server started with the user's credentials does.
    monkeypatch.setattr(_boto, "_SESSIONS", {})
    objects = open_store(f"s3://{bucket}")
    signouts = open_signouts(objects.records, 1.0)
    signouts.end(session_id("old"), time.time() + 1)
    time.sleep(2.2)  # S3 times objects to the second
    signouts.end(session_id("new"), time.time() + 1)
    objects.close()
    assert enforcing.versions(bucket, SIGNOUTS_PREFIX) == [
        (SIGNOUTS_PREFIX + session_id("new"), False)
    ]


def test_the_read_only_policy_reads_and_refuses_writes_naming_the_action(
    enforcing: Enforcing, serve: Callable[..., StatekeeperServer]
) -> None:
    bucket = enforcing.bucket("tfstate-read-only")
    s3 = enforcing.client("s3")
    s3.put_object(Bucket=bucket, Key=NAME, Body=state_json(1))
    s3.put_object(Bucket=bucket, Key=NAME, Body=state_json(2))
    env = enforcing.user("reader", iam_policy(bucket, table=TABLE, read_only=True))
    store = ("--store", f"s3://{bucket}", "--locks", f"dynamodb://{TABLE}")
    server = serve(*store, env=env)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert json.loads(http.get(f"/state/{NAME}").content)["serial"] == 2
        assert [v["serial"] for v in http.get(f"/api/v1/versions/{NAME}").json()] == [2, 1]
        assert http.get("/api/v1/locks").status_code == 200
        assert http.get("/readyz").status_code == 200

        written = http.post(f"/state/{NAME}", content=state_json(3))
        assert written.status_code == 502
        assert f"s3:PutObject on s3://{bucket}/{NAME}" in written.json()["message"]
        locked = http.request(
            "LOCK", f"/state/{NAME}", content=LockInfo.new("OperationTypeApply", "ci").body
        )
        assert locked.status_code == 502
        assert "dynamodb:PutItem" in locked.json()["message"]
        rolled = http.post(f"/api/v1/rollback/{NAME}", json={"to": "serial:1"})
        assert rolled.status_code == 502, rolled.text
        # A rollback runs under the state's lock: refused at taking it.
        assert "dynamodb:PutItem" in rolled.json()["message"]
    server.stop()
    assert "Traceback" not in server.log()
    # The reads were audited: AuditReads lets the read-only user write the trail.
    assert enforcing.versions(bucket, "statekeeper!/audit/")


def test_an_older_policy_without_erasing_still_delivers_each_event_once(
    enforcing: Enforcing,
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    receiver: Receiver,  # noqa: F811
) -> None:
    # The policy before DeliverWebhooks granted s3:DeleteObjectVersion: the sender deletes
    # what it cannot erase, so a delivered entry leaves the outbox (a delete marker above
    # its versions) and is not sent again.
    bucket = enforcing.bucket("tfstate-older-policy")
    older = copy.deepcopy(iam_policy(bucket, table=TABLE))
    for statement in older["Statement"]:
        if statement["Sid"] == "DeliverWebhooks":
            statement["Action"] = "s3:DeleteObject"
    env = enforcing.user("older", older)
    store = ("--store", f"s3://{bucket}", "--locks", f"dynamodb://{TABLE}")
    operator(env, tmp_path, "hooks", "add", "ci", "--url", receiver.url, "--secret", SECRET, *store)
    server = serve(*store, env={**env, **FAST})
    for serial in (1, 2):
        posted = httpx.post(server.state_url(NAME), content=state_json(serial), timeout=30)
        assert posted.status_code == 200, posted.text
    receiver.wait_for(2)
    outbox = WEBHOOKS_PREFIX + "outbox/"
    s3 = enforcing.client("s3")
    wait_until(
        "the delivered entries leave the outbox",
        lambda: "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=outbox),
    )
    time.sleep(6)  # a poll of the sender (5 s): an entry left would be sent again
    server.stop()

    ids = [d["event_id"] for d in receiver.deliveries]
    assert len(ids) == 2 and len(set(ids)) == 2
    markers = [key for key, marker in enforcing.versions(bucket, outbox) if marker]
    assert len(markers) == 2
    log = server.log()
    assert log.count("the webhook objects' versions stay in the bucket") == 1
    assert "s3:DeleteObjectVersion" in log
    assert "Traceback" not in log


def test_allow_delete_deletes_into_the_trash_and_a_restore_is_refused_naming_the_action(
    enforcing: Enforcing, tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    # DeleteStates adds a delete marker; taking it away again (a restore) removes a
    # version, which no statement grants.
    bucket = enforcing.bucket("tfstate-allow-delete")
    env = enforcing.user("deleter", iam_policy(bucket, table=TABLE, allow_delete=True))
    store = ("--store", f"s3://{bucket}", "--locks", f"dynamodb://{TABLE}")
    server = serve(*store, env=env)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post(f"/state/{NAME}", content=state_json(1)).status_code == 200
        assert http.delete(f"/state/{NAME}").status_code == 200
        assert http.get(f"/state/{NAME}").status_code == 404
        (trashed,) = http.get("/api/v1/trash").json()
        assert trashed["name"] == NAME
        restored = http.post(f"/api/v1/trash/restore/{NAME}")
        assert restored.status_code == 502, restored.text
        assert f"s3:DeleteObjectVersion on s3://{bucket}/{NAME}" in restored.json()["message"]
    server.stop()
    assert "Traceback" not in server.log()
    listed = operator(env, tmp_path, "trash", "list", *store)
    assert NAME in listed.stdout
