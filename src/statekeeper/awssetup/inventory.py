"""What the bucket and table hold, read once per doctor run: objects, digests, locks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from statekeeper.awssetup.checks import aws_call
from statekeeper.awssetup.context import Aws, Target

__all__ = ["DIGEST_SUFFIX", "LOCK_SUFFIX", "PROBE_PREFIX", "Inventory", "take_inventory"]

PROBE_PREFIX = ".statekeeper-doctor/"
LOCK_SUFFIX = ".tflock"
DIGEST_SUFFIX = "-md5"


@dataclass
class Inventory:
    """What the bucket and table hold, read once."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    db_locks: dict[str, str] = field(default_factory=dict)  # state key -> Info JSON

    def state_keys(self) -> list[str]:
        keys = {k for k in self.objects if k.endswith(".tfstate")}
        keys |= set(self.digests) | set(self.db_locks)
        keys |= {k[: -len(LOCK_SUFFIX)] for k in self.objects if k.endswith(LOCK_SUFFIX)}
        return sorted(k for k in keys if not k.startswith(PROBE_PREFIX))


def take_inventory(aws: Aws, target: Target) -> Inventory:
    inv = Inventory()
    s3 = aws.s3(target.region)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=target.bucket)
    for page in aws_call("s3:ListBucket", f"bucket {target.bucket}", lambda: list(pages)):
        for obj in page.get("Contents", []):
            inv.objects[obj["Key"]] = obj
    if target.table:
        prefix = f"{target.bucket}/"
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
                if lock_id.endswith(DIGEST_SUFFIX) and "Digest" in item:
                    inv.digests[lock_id[: -len(DIGEST_SUFFIX)]] = item["Digest"].get("S", "")
                elif "Info" in item:
                    inv.db_locks[lock_id] = item["Info"].get("S", "")
    return inv
