"""Real server processes for tests and benchmarks: statekeeper and moto.

Both bind a free loopback port, are polled until they answer, and are stopped
(or killed) by the caller. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

__all__ = [
    "MotoServer",
    "PrometheusServer",
    "StatekeeperServer",
    "child_of",
    "free_port",
    "limit_file_size",
    "running",
    "wait_for_http",
    "wait_until_gone",
]

SRC = Path(__file__).resolve().parents[2]


def limit_file_size(limit: int) -> None:
    """This process (a child, before it runs anything) may grow no file past ``limit``
    bytes; a write past it fails with EFBIG instead of raising SIGXFSZ."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def output_before_sigkill(code: str, timeout: float = 60) -> str:
    """Run ``code`` (Python; statekeeper importable) in a child process that SIGKILLs
    itself right after it, and return what it wrote to standard output: what a crash
    test's child acknowledged before dying without any cleanup."""
    script = textwrap.dedent(code) + (
        "\nimport os, signal, sys\nsys.stdout.flush()\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=timeout
    )
    if done.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the child ended with {done.returncode}, not SIGKILL:\n{done.stderr}")
    return done.stdout


def child_of(pid: int, module: str, timeout: float = 30) -> int:
    """The pid of ``pid``'s child running ``python -m module``, once it runs."""
    deadline = time.monotonic() + timeout
    while True:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                if module.encode() in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} started no {module}")
        time.sleep(0.1)


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie nobody reaped yet has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_gone(pid: int, timeout: float = 20) -> None:
    """Wait for ``pid`` to end; AssertionError if it outlives ``timeout``."""
    deadline = time.monotonic() + timeout
    while running(pid):
        assert time.monotonic() < deadline, f"process {pid} outlived its parent"
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_http(
    url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0, expect: bytes | None = None
) -> None:
    """Poll ``url`` until it answers; with ``expect``, until a 200 whose body holds it.

    ``expect`` tells our server from whatever else may answer on the port: a free
    port picked earlier can be taken by another process before ours binds it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if expect is None or expect in response.read():
                    return
        except urllib.error.HTTPError:
            if expect is None:
                return  # it answered
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class _Process:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no chance to flush or clean up."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class StatekeeperServer(_Process):
    """``statekeeper serve`` from this source tree on a free port."""

    def __init__(
        self,
        workdir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        file_size_limit: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.args = args
        self.file_size_limit = file_size_limit
        self.extra_env = env or {}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"statekeeper-{self.port}.log"

    def start(self) -> StatekeeperServer:
        env = {
            # Tests read the server log as text unless they ask for JSON.
            "STATEKEEPER_LOG_FORMAT": "text",
            **os.environ,
            **self.extra_env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        }
        log = self.log_path.open("ab")
        limit = self.file_size_limit
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "statekeeper",
                "serve",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                *self.args,
            ],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # A full disk as the server sees it, without a file system to fill.
            preexec_fn=None if limit is None else functools.partial(limit_file_size, limit),
        )
        log.close()
        try:
            wait_for_http(self.url + "/healthz", self.proc, expect=b'"status":"ok"')
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- server log ---\n{self.log()}") from exc
        return self

    def state_url(self, name: str) -> str:
        return f"{self.url}/state/{name}"

    def backend_block(self, name: str, **extra: str) -> str:
        address = self.state_url(name)
        lines = [
            f'    address = "{address}"',
            f'    lock_address = "{address}"',
            f'    unlock_address = "{address}"',
        ]
        lines += [f'    {k} = "{v}"' for k, v in extra.items()]
        return 'terraform {\n  backend "http" {\n' + "\n".join(lines) + "\n  }\n}\n"


# ``moto_server`` with each answer sent in one write. Werkzeug's development server
# writes an answer's headers, then its body; now and then, Terraform's AWS SDK closed
# the connection between the two and retried a DynamoDB PutItem that moto had applied,
# and Terraform then failed on its own lock ("Error acquiring the state lock", the
# lock item its first attempt wrote). Of 787 applies with `dynamodb_table` against
# moto as it ships, 9 failed so; of 1,400 with one write an answer, none.
#
# Buffered, the interim "100 Continue" that botocore's S3 uploads wait for (`Expect:
# 100-continue`) must be flushed by itself, or each upload waits out botocore's
# second of waiting for it (8 ms a call became 260 ms).
_MOTO = """
import sys
from werkzeug.serving import WSGIRequestHandler

expect_100 = WSGIRequestHandler.handle_expect_100

def go_on(handler):
    answered = expect_100(handler)
    handler.wfile.flush()
    return answered

WSGIRequestHandler.wbufsize = -1  # buffered: headers and body leave at write()'s flush
WSGIRequestHandler.handle_expect_100 = go_on

# DynamoDB's conditional writes are atomic; moto's check the condition, then write, on
# a thread per request with no lock between: on a loaded machine two LOCKs both won.
import functools
import threading
from moto.dynamodb.models import DynamoDBBackend

writes = threading.Lock()

def atomic(method):
    @functools.wraps(method)
    def call(*args, **kwargs):
        with writes:
            return method(*args, **kwargs)
    return call

for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
    setattr(DynamoDBBackend, name, atomic(getattr(DynamoDBBackend, name)))

# S3's conditional PutObject (If-Match, If-None-Match) is atomic too; moto's checks the
# ETag, then writes: on a loaded machine several PUTs on one ETag all won (two replicas
# could both claim one webhook outbox entry and send its event twice). Each PUT of an
# object (and each completion of a multipart upload) checks and writes under one lock,
# which a removal waits for.
from moto.s3.models import S3Backend
from moto.s3.responses import S3Response

objects = threading.RLock()

def atomic_s3(method):
    @functools.wraps(method)
    def call(*args, **kwargs):
        with objects:
            return method(*args, **kwargs)
    return call

for name in ("put_object", "_key_response_post"):
    setattr(S3Response, name, atomic_s3(getattr(S3Response, name)))
for name in ("delete_object", "delete_objects"):
    setattr(S3Backend, name, atomic_s3(getattr(S3Backend, name)))

# Under IAM enforcement (INITIAL_NO_AUTH_ACTION_COUNT) moto checks an S3 call by its API
# name: a version's delete as s3:DeleteObject, a version's read as s3:GetObject, the
# listing of versions as s3:ListObjectVersions. AWS checks s3:DeleteObjectVersion,
# s3:GetObjectVersion and s3:ListBucketVersions, the names moto keeps for them in the
# request's data: checked by those, a policy granting DeleteObject alone may not remove
# a version, as on AWS. (Without enforcement moto makes no such request object.)
from moto.iam.access_control import S3IAMRequest

_VERSION_ACTIONS = {"DeleteObjectVersion", "GetObjectVersion", "ListBucketVersions"}
s3_request = S3IAMRequest.__init__

def by_version_action(self, account_id, method, path, data, body, headers, action):
    if data.get("Action") in _VERSION_ACTIONS:
        action = data["Action"]
    s3_request(self, account_id, method, path, data, body, headers, action)

S3IAMRequest.__init__ = by_version_action

from moto.server import main
sys.exit(main())
"""


class MotoServer(_Process):
    """A moto server process: S3 and DynamoDB over HTTP, the way boto3 talks to AWS."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"moto-{self.port}.log"

    def start(self) -> MotoServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _MOTO, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_http(self.url + "/moto-api/", self.proc)
        return self

    def reset(self) -> None:
        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def client(self, service: str) -> Any:
        """A plain boto3 client on this server, for setting up and looking."""
        import boto3

        return boto3.client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def versioned_bucket(self, bucket: str) -> str:
        """Create ``bucket`` with versioning on, as ``statekeeper bootstrap`` makes it."""
        s3 = self.client("s3")
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        return bucket

    def lock_table(self, table: str) -> str:
        """Create ``table`` as Terraform's ``dynamodb_table`` needs it: ``LockID`` the key."""
        self.client("dynamodb").create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        return table

    def s3_backend_block(self, bucket: str, key: str, *extra: str) -> str:
        """Terraform's ``backend "s3"`` pointed at this server; ``extra`` lines are added
        as they are (``dynamodb_table = "…"``, ``use_lockfile = true``, ``encrypt = true``)."""
        url = self.url
        lines = [
            f'bucket = "{bucket}"',
            f'key = "{key}"',
            'region = "us-east-1"',
            f'endpoints = {{ s3 = "{url}", dynamodb = "{url}", sts = "{url}" }}',
            "use_path_style = true",
            "skip_credentials_validation = true",
            "skip_requesting_account_id = true",
            "skip_metadata_api_check = true",
            'access_key = "test"',
            'secret_key = "test"',
            *extra,
        ]
        body = "".join(f"    {line}\n" for line in lines)
        return f'terraform {{\n  backend "s3" {{\n{body}  }}\n}}\n'

    def env(self) -> dict[str, str]:
        """Environment for boto3 (and Terraform) to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }


#: Debian's ``prometheus`` package (``apt-get install -y prometheus``).
PROMETHEUS = Path("/usr/bin/prometheus")


class PrometheusServer(_Process):
    """A real Prometheus on loopback scraping ``jobs`` every second.

    ``jobs`` maps a job name to its scrape config entries besides the name and
    interval: ``{"static_configs": [{"targets": ["127.0.0.1:8080"]}], ...}``.
    """

    def __init__(self, workdir: Path, jobs: dict[str, dict[str, Any]]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.log_path = workdir / f"prometheus-{self.port}.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": name, "scrape_interval": "1s", "scrape_timeout": "1s", **job}
                for name, job in jobs.items()
            ],
        }
        # JSON is YAML: no YAML library needed to write the configuration.
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(json.dumps(config, indent=2))

    def start(self) -> PrometheusServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_http(self.url + "/-/ready", self.proc, timeout=60)
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` (``/api/v1/query``)."""
        url = f"{self.url}/api/v1/query?{urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {expr!r}: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value of ``expr``, or None when it has no sample."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None
