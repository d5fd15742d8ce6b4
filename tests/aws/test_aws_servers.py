"""Stateless servers on S3 + DynamoDB: replicas share locks, nothing on local disk, clear errors."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from statekeeper.errors import MissingDependency
from statekeeper.storage import registry
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.testing.contracts import STATE
from statekeeper.testing.processes import SRC, MotoServer, StatekeeperServer

pytestmark = pytest.mark.aws

ROUNDS = 6
CONTENDERS = 10


def _lock_round(urls: list[str], round_: int) -> list[tuple[int, LockInfo]]:
    """CONTENDERS clients LOCK at once, spread over the replicas; (status, lock) of each."""
    barrier = threading.Barrier(CONTENDERS)
    answers: list[tuple[int, LockInfo]] = []
    guard = threading.Lock()

    def contend(n: int) -> None:
        info = LockInfo.new("OperationTypeApply", f"client{n}@round{round_}")
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            status = client.request("LOCK", urls[n % len(urls)], content=info.body).status_code
        with guard:
            answers.append((status, info))

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(CONTENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


@pytest.mark.parametrize("locks", ["dynamodb", "s3lock", "both"])
def test_two_replicas_give_one_lock_per_round(
    locks: str,
    serve: Callable[..., StatekeeperServer],
    moto: MotoServer,
    bucket: str,
    table: str,
    tmp_path: Path,
) -> None:
    urls = {
        "dynamodb": [f"dynamodb://{table}"],
        "s3lock": [f"s3lock://{bucket}"],
        "both": [f"dynamodb://{table}", f"s3lock://{bucket}"],
    }[locks]
    args = ["--store", f"s3://{bucket}/replicas"]
    for url in urls:
        args += ["--locks", url]
    replicas = [serve(*args, env=moto.env(), workdir=tmp_path / f"r{n}") for n in range(2)]
    name = "team/app.tfstate"
    for round_ in range(ROUNDS):
        answers = _lock_round([r.state_url(name) for r in replicas], round_)
        winners = [info for status, info in answers if status == 200]
        assert sorted(s for s, _ in answers) == [200] + [423] * (CONTENDERS - 1), answers
        # The winner may unlock through the other replica.
        freed = httpx.request(
            "UNLOCK", replicas[1].state_url(name), content=winners[0].body, timeout=60
        )
        assert freed.status_code == 200, freed.text
    for n in range(len(replicas)):
        assert not (tmp_path / f"r{n}" / ".statekeeper").exists()


def test_write_through_one_replica_read_through_other(
    serve: Callable[..., StatekeeperServer],
    moto: MotoServer,
    bucket: str,
    table: str,
    s3: Any,
    tmp_path: Path,
) -> None:
    args = ("--store", f"s3://{bucket}", "--locks", f"dynamodb://{table}")
    a = serve(*args, env=moto.env(), workdir=tmp_path / "a")
    b = serve(*args, env=moto.env(), workdir=tmp_path / "b")
    written = httpx.post(a.state_url("env:/dev/app.tfstate"), content=STATE, timeout=30)
    assert written.status_code == 200, written.text
    assert httpx.get(b.state_url("env:/dev/app.tfstate"), timeout=30).content == STATE
    assert s3.get_object(Bucket=bucket, Key="env:/dev/app.tfstate")["Body"].read() == STATE
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [f"statekeeper-{a.port}.log"]


def _serve_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", "serve", "--port", "1", *args],
        env={**env, "PYTHONPATH": str(SRC)},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_serve_on_missing_bucket_or_table_says_so(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    import os

    env = {**os.environ, **moto.env()}
    missing = _serve_cli(["--store", "s3://no-such-bucket", "--locks", "s3lock://"], env, tmp_path)
    assert missing.returncode == 1
    assert "bucket 'no-such-bucket' does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr + missing.stdout
    no_table = _serve_cli(
        ["--store", f"s3://{bucket}", "--locks", "dynamodb://nope"], env, tmp_path
    )
    assert no_table.returncode == 1
    assert "DynamoDB table 'nope' does not exist" in no_table.stderr
    assert "Traceback" not in no_table.stderr + no_table.stdout
    bad = _serve_cli(["--store", f"s3://{bucket}?sse=rot13"], env, tmp_path)
    assert bad.returncode == 2
    assert "sse='rot13' must be AES256 or aws:kms" in bad.stderr
    assert not (tmp_path / ".statekeeper").exists()


def test_serve_warns_when_the_bucket_keeps_no_history(
    serve: Callable[..., StatekeeperServer], moto: MotoServer, plain_bucket: str, table: str
) -> None:
    server = serve(
        "--store", f"s3://{plain_bucket}", "--locks", f"dynamodb://{table}", env=moto.env()
    )
    server.stop()
    assert "keeps no state history" in server.log()
    assert "put-bucket-versioning" in server.log()


def test_serve_says_when_its_writes_keep_no_dynamodb_digest(
    serve: Callable[..., StatekeeperServer], moto: MotoServer, bucket: str, table: str
) -> None:
    lock_files = serve("--store", f"s3://{bucket}", env=moto.env())
    lock_files.stop()
    assert (
        f"writes keep no DynamoDB digest (no --locks dynamodb://TABLE): if Terraform's own "
        f'backend "s3" also uses s3://{bucket} with dynamodb_table'
    ) in " ".join(lock_files.log().split())
    with_table = serve(
        "--store", f"s3://{bucket}", "--locks", f"dynamodb://{table}", env=moto.env()
    )
    with_table.stop()
    assert "DynamoDB digest" not in with_table.log()


def test_missing_boto3_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("boto3", "statekeeper.storage.aws.s3", "statekeeper.storage.aws._boto"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependency, match=r"pip install 'statekeeper\[aws\]'"):
        registry.open_store("s3://some-bucket")


def test_serve_without_boto3_says_what_to_install(tmp_path: Path) -> None:
    import os

    code = (
        "import sys; sys.modules['boto3'] = None; "
        "sys.argv = ['statekeeper', 'serve', '--store', 's3://some-bucket']; "
        "from statekeeper.cli import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "pip install 'statekeeper[aws]'" in done.stderr
    assert "Traceback" not in done.stderr
