"""Helpers for bootstrap/doctor tests: the CLI in-process, boto3 clients on the moto server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from click.testing import CliRunner

from statekeeper.cli import app

SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class Cli:
    exit_code: int
    output: str

    def json(self) -> Any:
        return json.loads(self.output)


def cli(*args: str) -> Cli:
    """Run a command in-process, as a person would type it."""
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return Cli(result.exit_code, result.output)


def cli_process(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a command in a child process, through ``main()`` (errors become exit codes)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


class Aws:
    """boto3 clients pointed at the moto server (by the ``moto`` fixture's environment)."""

    def __init__(self, region: str = "us-east-1") -> None:
        self.s3 = boto3.client("s3", region_name=region)
        self.ddb = boto3.client("dynamodb", region_name=region)
        self.iam = boto3.client("iam", region_name=region)
        self.kms = boto3.client("kms", region_name=region)

    def policy(self, bucket: str) -> dict[str, Any]:
        return dict(json.loads(self.s3.get_bucket_policy(Bucket=bucket)["Policy"]))

    def drop_policy(self, bucket: str) -> None:
        """moto evaluates no policy condition (aws:SecureTransport, Null, StringNotEquals):
        it applies every Deny statement unconditionally, so with statekeeper's bucket policy
        in place it refuses all object reads and writes. Tests that need object I/O remove
        the policy after checking it and skip the two policy checks."""
        self.s3.delete_bucket_policy(Bucket=bucket)


def statuses(report: dict[str, Any]) -> dict[str, str]:
    """check ID (and subject) -> status, from doctor's or bootstrap's JSON."""
    return {
        c["check"] + (f"[{c['subject']}]" if c["subject"] else ""): c["status"]
        for c in report["checks"]
    }


POLICY_SKIP = ("--skip", "bucket.policy-*")
