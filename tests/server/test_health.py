"""``/healthz`` and ``/readyz``: on the embedded store, and on S3 + DynamoDB as moto goes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from tfwire import Api

from statekeeper.testing.processes import MotoServer, StatekeeperServer

BUCKET = "ready-bucket"
TABLE = "ready-locks"


def test_ready_on_the_embedded_store(api: Api) -> None:
    health = api.request("GET", "/healthz")
    assert health.status_code == 200
    ready = api.request("GET", "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "locks": "ok"}}


def _create_bucket_and_table(moto: MotoServer) -> None:
    moto.client("s3").create_bucket(Bucket=BUCKET)
    moto.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _poll(url: str, want: int, timeout: float = 90) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(url, timeout=30)
        if answer.status_code == want or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


@pytest.mark.aws
def test_readyz_follows_the_store_and_lock_table(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    moto = MotoServer(tmp_path / "moto").start()
    try:
        _create_bucket_and_table(moto)
        server = serve(
            "--store",
            f"s3://{BUCKET}",
            "--locks",
            f"dynamodb://{TABLE}",
            env={**moto.env(), "STATEKEEPER_READY_TIMEOUT": "1"},
        )
        ready = httpx.get(server.url + "/readyz", timeout=30)
        assert ready.status_code == 200, ready.text

        moto.stop()
        down = _poll(server.url + "/readyz", 503)
        assert down.status_code == 503, down.text
        body = down.json()
        assert body["error"] == "not_ready"
        # boto3 retries a refused connection for longer than the probe is waited for.
        down_kinds = ("timeout: no answer within 1 s", "storage_unavailable: unavailable")
        assert body["checks"]["store"] in down_kinds
        assert body["checks"]["locks"] in down_kinds
        assert body["message"].startswith("store: ")
        assert down.headers["retry-after"] == "1"
        # The process itself is fine: liveness does not follow the store.
        assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200
        # The failed calls are counted by driver and operation once boto3 gives up.
        # The two probes run side by side, each giving up after its own retries.
        deadline = time.monotonic() + 90
        failed = [
            f'errors_total{{driver="{driver}",error="storage_unavailable",operation="probe"}}'
            for driver in ("s3", "dynamodb")
        ]
        text = httpx.get(server.url + "/metrics", timeout=30).text
        while not all(f in text for f in failed):
            assert time.monotonic() < deadline, text
            time.sleep(1)
            text = httpx.get(server.url + "/metrics", timeout=30).text

        moto.start()  # same port, empty: no bucket and no table yet
        missing = _poll(server.url + "/readyz", 503)
        _create_bucket_and_table(moto)
        back = _poll(server.url + "/readyz", 200)
        assert back.status_code == 200, (missing.text, back.text)
        assert back.json()["checks"] == {"store": "ok", "locks": "ok"}
    finally:
        moto.stop()


def _names_nothing(answer: httpx.Response, moto: MotoServer) -> None:
    """The answer says no bucket, table, endpoint, account or IAM action."""
    endpoint = moto.env()["AWS_ENDPOINT_URL"].split("//", 1)[1]
    for name in (BUCKET, TABLE, endpoint, "s3:", "dynamodb:", "arn:", "123456789012"):
        assert name not in answer.text, answer.text


def _readyz_three_times(server: StatekeeperServer) -> list[httpx.Response]:
    # A load balancer asks again and again; the log is not to say it again.
    return [httpx.get(server.url + "/readyz", timeout=30) for _ in range(3)]


@pytest.mark.aws
def test_readyz_names_no_missing_bucket_or_table(
    moto: MotoServer, serve: Callable[..., StatekeeperServer]
) -> None:
    _create_bucket_and_table(moto)
    server = serve("--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}", env=moto.env())
    assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200
    moto.reset()  # no bucket and no table

    for answer in _readyz_three_times(server):
        assert answer.status_code == 503, answer.text
        unavailable = "storage_unavailable: unavailable"
        assert answer.json()["checks"] == {"store": unavailable, "locks": unavailable}
        assert answer.json()["message"] == (
            f"store: {unavailable}; locks: {unavailable} (the server log has the reason)"
        )
        _names_nothing(answer, moto)
    # The reasons, in full and once each, are the operator's, in the log.
    log = server.log()
    (store,) = [line for line in log.splitlines() if "readiness: the store" in line]
    assert store.startswith("WARNING:")
    assert f"storage_unavailable: the S3 bucket {BUCKET!r} does not exist" in store
    (locks,) = [line for line in log.splitlines() if "readiness: the lock table" in line]
    assert "storage_unavailable: " in locks and TABLE in locks and "does not exist" in locks


@dataclass
class Prober:
    """A moto server enforcing IAM, the environment of an IAM user allowed everything,
    and an IAM client of that user's (it may deny itself the probes, and back)."""

    moto: MotoServer
    env: dict[str, str]

    def client(self, service: str) -> Any:
        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.moto.url,
            region_name="us-east-1",
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def deny(self, *actions: str, resource: str) -> None:
        statement = {"Effect": "Deny", "Action": list(actions), "Resource": resource}
        self.client("iam").put_user_policy(
            UserName="prober",
            PolicyName="deny",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
        )

    def allow_again(self) -> None:
        self.client("iam").delete_user_policy(UserName="prober", PolicyName="deny")


@pytest.fixture
def prober(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Prober]:
    # moto enforces a bucket policy on objects only, not on HeadBucket: a moto server of
    # its own enforces IAM instead, after the four set-up requests below.
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "4")
    moto = MotoServer(tmp_path / "moto-iam").start()
    monkeypatch.delenv("INITIAL_NO_AUTH_ACTION_COUNT")
    try:
        env = moto.env()
        moto.client("s3").create_bucket(Bucket=BUCKET)
        iam = moto.client("iam")
        iam.create_user(UserName="prober")
        # Everything, its own policies included: the tests deny it the probes and back.
        allow = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        iam.put_user_policy(
            UserName="prober",
            PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allow]}),
        )
        key = iam.create_access_key(UserName="prober")["AccessKey"]
        env |= {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        }
        yield Prober(moto, env)
    finally:
        moto.stop()


@pytest.mark.aws
def test_readyz_names_no_denied_action(
    prober: Prober, serve: Callable[..., StatekeeperServer]
) -> None:
    moto = prober.moto
    # moto checks HeadBucket as s3:HeadBucket, AWS as s3:ListBucket: deny both.
    no_probe = ("s3:ListBucket", "s3:HeadBucket")

    # The store and its lock files in one bucket: both probes are a HeadBucket on it.
    server = serve("--store", f"s3://{BUCKET}", env=prober.env)
    assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200
    prober.deny(*no_probe, resource=f"arn:aws:s3:::{BUCKET}")

    for answer in _readyz_three_times(server):
        assert answer.status_code == 503, answer.text
        denied = "storage_access_denied: access denied"
        assert answer.json()["checks"] == {"store": denied, "locks": denied}
        _names_nothing(answer, moto)
    full = f"storage_access_denied: AWS denied s3:ListBucket on s3://{BUCKET}"
    lines = server.log().splitlines()
    assert [line for line in lines if "readiness: the store is not ready" in line] == [
        f"WARNING:  statekeeper.server: readiness: the store is not ready: {full} (403); "
        "grant the permission to the credentials in use (see `statekeeper iam-policy`)"
    ]
    assert len([line for line in lines if full in line]) == 2  # the store's and locks'

    prober.allow_again()
    back = httpx.get(server.url + "/readyz", timeout=30)
    assert back.status_code == 200, back.text
    assert back.json() == {"status": "ready", "checks": {"store": "ok", "locks": "ok"}}
    # A new outage is a change of state: told again.
    prober.deny(*no_probe, resource=f"arn:aws:s3:::{BUCKET}")
    assert httpx.get(server.url + "/readyz", timeout=30).status_code == 503
    assert len([line for line in server.log().splitlines() if full in line]) == 4


@pytest.mark.aws
def test_readyz_names_no_denied_lock_table(
    prober: Prober, serve: Callable[..., StatekeeperServer]
) -> None:
    prober.client("dynamodb").create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    server = serve("--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}", env=prober.env)
    assert httpx.get(server.url + "/readyz", timeout=30).status_code == 200
    # moto checks a DynamoDB call against the resource "*", not the table's ARN.
    table = "*"

    # Terraform's minimal policy grants no DescribeTable: the probe's GetItem answers.
    prober.deny("dynamodb:DescribeTable", resource=table)
    ready = httpx.get(server.url + "/readyz", timeout=30)
    assert ready.status_code == 200, ready.text

    prober.deny("dynamodb:DescribeTable", "dynamodb:GetItem", resource=table)
    for answer in _readyz_three_times(server):
        assert answer.status_code == 503, answer.text
        assert answer.json()["checks"] == {
            "store": "ok",
            "locks": "storage_access_denied: access denied",
        }
        assert answer.json()["message"] == (
            "locks: storage_access_denied: access denied (the server log has the reason)"
        )
        _names_nothing(answer, prober.moto)
    lines = server.log().splitlines()
    # (403): moto's denial is XML, which botocore does not read in a JSON answer.
    assert [line for line in lines if "readiness: the lock table" in line] == [
        "WARNING:  statekeeper.server: readiness: the lock table is not ready: "
        f"storage_access_denied: AWS denied dynamodb:GetItem on the DynamoDB table {TABLE!r} "
        "(403); grant the permission to the credentials in use "
        "(see `statekeeper iam-policy`)"
    ]
    assert not [line for line in lines if "readiness: the store" in line]
    assert "Traceback" not in server.log()

    prober.allow_again()
    back = httpx.get(server.url + "/readyz", timeout=30)
    assert back.json() == {"status": "ready", "checks": {"store": "ok", "locks": "ok"}}


@pytest.mark.aws
def test_readyz_under_a_prefix_lists_there_instead_of_heading_the_bucket(
    prober: Prober, serve: Callable[..., StatekeeperServer]
) -> None:
    # A policy limited to a prefix (`iam-policy --prefix`) grants s3:ListBucket only for
    # requests whose s3:prefix lies under it; HeadBucket carries none and is refused.
    # moto evaluates no condition, so HeadBucket is denied here outright (moto checks it
    # by that name) while listings stay allowed: what such a policy does on AWS.
    prober.deny("s3:HeadBucket", resource=f"arn:aws:s3:::{BUCKET}")
    server = serve("--store", f"s3://{BUCKET}/team-a", env=prober.env)
    ready = httpx.get(server.url + "/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"store": "ok", "locks": "ok"}}

    # The listing is still a probe: a bucket gone is named, as HeadBucket's 404 was.
    prober.allow_again()
    admin = prober.client("s3")
    admin.delete_bucket(Bucket=BUCKET)
    answer = httpx.get(server.url + "/readyz", timeout=30)
    assert answer.status_code == 503, answer.text
    assert answer.json()["checks"]["store"] == "storage_unavailable: unavailable"
    (line,) = [line for line in server.log().splitlines() if "readiness: the store" in line]
    assert f"the S3 bucket {BUCKET!r} does not exist (s3:ListObjectsV2 answered 404)" in line
