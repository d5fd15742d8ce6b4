"""Buckets and tables on the moto server, and driver handles on them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tests.aws.helpers import S3Backend

from statekeeper.testing.processes import MotoServer

BUCKET = "tfstate-bucket"
PLAIN_BUCKET = "plain-bucket"
TABLE = "tf-locks"


def aws(service: str, moto: MotoServer) -> Any:
    return moto.client(service)


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    """A plain boto3 S3 client on the moto server, for setting up and looking."""
    return aws("s3", moto)


@pytest.fixture
def ddb(moto: MotoServer) -> Any:
    return aws("dynamodb", moto)


@pytest.fixture
def kms(moto: MotoServer) -> Any:
    return aws("kms", moto)


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    """A versioned bucket, as `statekeeper bootstrap` (and good practice) makes it."""
    return moto.versioned_bucket(BUCKET)


@pytest.fixture
def plain_bucket(s3: Any) -> str:
    """A bucket without versioning."""
    s3.create_bucket(Bucket=PLAIN_BUCKET)
    return PLAIN_BUCKET


@pytest.fixture
def table(moto: MotoServer) -> str:
    return moto.lock_table(TABLE)


@pytest.fixture
def moto_env(moto: MotoServer) -> Callable[[], dict[str, str]]:
    return moto.env


@pytest.fixture
def s3_backend(moto: MotoServer, bucket: str, table: str, s3: Any, ddb: Any) -> S3Backend:
    """The bucket and the lock table as Terraform's ``backend "s3"`` uses them."""
    return S3Backend(moto, bucket, table, s3, ddb)
