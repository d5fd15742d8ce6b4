"""Terraform's ``backend "s3"`` on the moto server: the bucket, the lock table, a look inside.

The tests that meet Terraform's own S3 backend share one set-up: a versioned
bucket and a DynamoDB lock table, a ``statekeeper serve`` on them, and plain
boto3 reads of what a holder left (the ``.tflock`` file, the lock and digest
items). The suffixes are spelled out here on purpose: this pins Terraform's
layout independently of ``statekeeper.terraform.layout``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from statekeeper.testing.processes import MotoServer, StatekeeperServer

#: Terraform's two locking modes: the DynamoDB table or the S3 lock file.
MODES = ["dynamodb", "lockfile"]


@dataclass(frozen=True)
class S3Backend:
    """A versioned bucket and a lock table on the moto server, with boto3 clients on them."""

    moto: MotoServer
    bucket: str
    table: str
    s3: Any
    ddb: Any

    def block(self, key: str, mode: str) -> str:
        """Terraform's ``backend "s3"`` block for ``key``, encrypted, locking by ``mode``."""
        locking = (
            f'dynamodb_table = "{self.table}"' if mode == "dynamodb" else "use_lockfile = true"
        )
        return self.moto.s3_backend_block(self.bucket, key, "encrypt = true", locking)

    def lock_url(self, mode: str) -> str:
        """The lock table the server uses to meet Terraform locking by ``mode``."""
        return f"dynamodb://{self.table}" if mode == "dynamodb" else f"s3lock://{self.bucket}"

    def serve(self, serve: Callable[..., StatekeeperServer], *lock_urls: str) -> StatekeeperServer:
        """A ``statekeeper serve`` on the bucket, with ``--locks`` for each URL given."""
        locks = [arg for url in lock_urls for arg in ("--locks", url)]
        return serve("--store", f"s3://{self.bucket}", *locks, env=self.moto.env())

    def lock_file(self, key: str) -> bytes | None:
        """The bytes of ``key``'s ``.tflock`` file, or None when there is none."""
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key + ".tflock")["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return body

    def item(self, lock_id: str) -> dict[str, Any] | None:
        """The lock table's item ``lock_id`` (a lock, or a digest ``…-md5``), read consistently."""
        item: dict[str, Any] | None = self.ddb.get_item(
            TableName=self.table, Key={"LockID": {"S": lock_id}}, ConsistentRead=True
        ).get("Item")
        return item
