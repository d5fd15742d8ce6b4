"""What the bucket and table hold, read once per doctor run: objects, digests, locks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from statekeeper.awssetup.checks import aws_call
from statekeeper.awssetup.context import Aws, Target
from statekeeper.terraform.layout import (
    PROBE_PREFIX,
    is_digest_id,
    is_lock_file,
    lock_path,
    state_of_digest_id,
    state_of_lock_file,
)

__all__ = ["Inventory", "take_inventory"]


@dataclass
class Inventory:
    """What the bucket and table hold, read once."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    db_locks: dict[str, dict[str, Any]] = field(default_factory=dict)  # lock key -> item

    def state_keys(self) -> list[str]:
        keys = {k for k in self.objects if k.endswith(".tfstate")}
        keys |= set(self.digests) | set(self.db_locks)
        keys |= {state_of_lock_file(k) for k in self.objects if is_lock_file(k)}
        return sorted(k for k in keys if not k.startswith(PROBE_PREFIX))


def take_inventory(aws: Aws, target: Target) -> Inventory:
    inv = Inventory()
    s3 = aws.s3(target.region)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=target.bucket)
    for page in aws_call("s3:ListBucket", f"bucket {target.bucket}", lambda: list(pages)):
        for obj in page.get("Contents", []):
            inv.objects[obj["Key"]] = obj
    if target.table:
        prefix = lock_path(target.bucket, "")
        scan = (
            aws.dynamodb(target.region)
            .get_paginator("scan")
            .paginate(
                TableName=target.table,
                ConsistentRead=True,
                FilterExpression="begins_with(LockID, :p)",
                ExpressionAttributeValues={":p": {"S": prefix}},
            )
        )
        items = aws_call("dynamodb:Scan", f"table {target.table}", lambda: list(scan))
        for page in items:
            for item in page.get("Items", []):
                lock_id = item["LockID"]["S"][len(prefix) :]
                if is_digest_id(lock_id) and "Digest" in item:
                    inv.digests[state_of_digest_id(lock_id)] = item["Digest"].get("S", "")
                elif "Info" in item:
                    inv.db_locks[lock_id] = item
    return inv
