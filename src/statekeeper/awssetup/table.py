"""Checks of the DynamoDB lock table: key schema, billing, PITR, SSE, deletion protection.

The table holds Terraform's lock items (``LockID = "<bucket>/<key>"``) and
digest items (the lock path + ``DIGEST_SUFFIX``); its only required attribute is the
hash key ``LockID``, a string (:data:`~statekeeper.storage.aws.dynamodb.LOCK_TABLE_KEY`).
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

from statekeeper.awssetup.checks import ABSENT, Check, Status, aws_call
from statekeeper.awssetup.context import Aws, Target
from statekeeper.errors import ConfigError
from statekeeper.storage.aws.dynamodb import LOCK_TABLE_KEY, describe_key, key_of

__all__ = ["table_checks"]

_NOT_FOUND = ("ResourceNotFoundException",)


class _TableCheck(Check):
    key: str

    def __init__(self, table: str | None) -> None:
        self.table = table or ""
        self.id = f"table.{self.key}"
        self.needs = f"table:{self.table}"

    def applies(self, target: Target) -> bool:
        return target.table is not None

    def client(self, aws: Aws, target: Target) -> Any:
        return aws.dynamodb(target.region)

    @property
    def where(self) -> str:
        return f"DynamoDB table {self.table}"

    def describe_table(self, aws: Aws, target: Target) -> Any:
        got = aws_call(
            "dynamodb:DescribeTable",
            self.where,
            self.client(aws, target).describe_table,
            TableName=self.table,
            absent=_NOT_FOUND,
        )
        return ABSENT if got is ABSENT else got["Table"]

    def wait_active(self, aws: Aws, target: Target) -> None:
        """Table updates are refused while a previous one is in progress."""
        waiter = self.client(aws, target).get_waiter("table_exists")
        waiter.wait(TableName=self.table, WaiterConfig={"Delay": 2, "MaxAttempts": 150})

    def update(self, aws: Aws, target: Target, **kwargs: Any) -> None:
        self.wait_active(aws, target)
        aws_call(
            "dynamodb:UpdateTable",
            self.where,
            self.client(aws, target).update_table,
            TableName=self.table,
            **kwargs,
        )
        self.wait_active(aws, target)


class TableExists(_TableCheck):
    key = "exists"
    title = "the lock table exists with hash key LockID (string)"
    safe_fix = False

    def __init__(self, table: str | None) -> None:
        super().__init__(table)
        self.needs = None
        self.creates = f"table:{self.table}"

    def read(self, aws: Aws, target: Target) -> Any:
        table = self.describe_table(aws, target)
        return ABSENT if table is ABSENT else key_of(table)

    def satisfied(self, target: Target, current: Any) -> bool:
        return bool(current == LOCK_TABLE_KEY)

    def describe(self, current: Any) -> str:
        if current is ABSENT:
            return f"table {self.table} does not exist"
        if current == LOCK_TABLE_KEY:
            return f"table {self.table} has {describe_key(current)}"
        return (
            f"table {self.table} has {describe_key(current)}; Terraform's lock table has "
            f"{describe_key(LOCK_TABLE_KEY)} and no range key (a table's key cannot change)"
        )

    def change(self, target: Target, current: Any) -> str:
        return f"create table {self.table} in {target.region} with {describe_key(LOCK_TABLE_KEY)}"

    def fix_hint(self, target: Target) -> str:
        return (
            f"statekeeper bootstrap --bucket {target.bucket} --table {self.table} (if "
            f"{self.table} exists with another key, give --table another name)"
        )

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        if current is not ABSENT:
            raise ConfigError(
                f"{self.describe(current)}: give --table a new table's name, then name "
                "that table in --locks and in Terraform's dynamodb_table"
            )
        sse: dict[str, Any] = {"Enabled": True, "SSEType": "KMS"}
        if target.kms_key:
            sse["KMSMasterKeyId"] = target.kms_key
        aws_call(
            "dynamodb:CreateTable",
            self.where,
            self.client(aws, target).create_table,
            TableName=self.table,
            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
            SSESpecification=sse,
            DeletionProtectionEnabled=True,
        )
        self.wait_active(aws, target)


class Billing(_TableCheck):
    key = "billing"
    title = "billing is on demand (PAY_PER_REQUEST)"
    severity = Status.WARN
    # Changing the billing mode changes the bill and is allowed once a day.
    safe_fix = False

    def read(self, aws: Aws, target: Target) -> Any:
        table = self.describe_table(aws, target)
        return table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")

    def satisfied(self, target: Target, current: Any) -> bool:
        return bool(current == "PAY_PER_REQUEST")

    def describe(self, current: Any) -> str:
        return f"billing mode is {current}"

    def change(self, target: Target, current: Any) -> str:
        return "switch billing to PAY_PER_REQUEST"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        self.update(aws, target, BillingMode="PAY_PER_REQUEST")


class PointInTimeRecovery(_TableCheck):
    key = "point-in-time-recovery"
    title = "point-in-time recovery is on"
    severity = Status.WARN

    def read(self, aws: Aws, target: Target) -> Any:
        got = aws_call(
            "dynamodb:DescribeContinuousBackups",
            self.where,
            self.client(aws, target).describe_continuous_backups,
            TableName=self.table,
        )
        desc = got.get("ContinuousBackupsDescription", {})
        return desc.get("PointInTimeRecoveryDescription", {}).get(
            "PointInTimeRecoveryStatus", "DISABLED"
        )

    def satisfied(self, target: Target, current: Any) -> bool:
        return bool(current == "ENABLED")

    def describe(self, current: Any) -> str:
        return f"point-in-time recovery is {str(current).lower()}"

    def change(self, target: Target, current: Any) -> str:
        return "turn on point-in-time recovery"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        from statekeeper.storage.aws import _boto

        self.wait_active(aws, target)
        client = self.client(aws, target)
        # Right after CreateTable, AWS may answer that backups are not available yet.
        for attempt in range(12):
            try:
                client.update_continuous_backups(
                    TableName=self.table,
                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
                )
                return
            except ClientError as exc:
                busy = _boto.error_code(exc) == "ContinuousBackupsUnavailableException"
                if not busy or attempt == 11:
                    _boto.translate(exc, "dynamodb:UpdateContinuousBackups", self.where)
                time.sleep(5)


class Encryption(_TableCheck):
    key = "encryption"
    title = "encryption at rest uses KMS"
    severity = Status.WARN

    def read(self, aws: Aws, target: Target) -> Any:
        sse = self.describe_table(aws, target).get("SSEDescription")
        if not sse:
            return ABSENT
        return (sse.get("Status", ""), sse.get("KMSMasterKeyArn", ""))

    def satisfied(self, target: Target, current: Any) -> bool:
        if current is ABSENT or current[0] not in ("ENABLED", "UPDATING", "ENABLING"):
            return False
        if target.kms_key and target.kms_key.startswith("arn:aws:kms"):
            return bool(current[1] == target.kms_key)
        return True

    def describe(self, current: Any) -> str:
        if current is ABSENT:
            return "encrypted at rest with an AWS owned key (not visible in your KMS)"
        status, key = current
        return f"KMS encryption is {status.lower()}" + (f" with {key}" if key else "")

    def change(self, target: Target, current: Any) -> str:
        key = target.kms_key or "the AWS managed key aws/dynamodb"
        return f"encrypt the table with {key}"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        sse: dict[str, Any] = {"Enabled": True, "SSEType": "KMS"}
        if target.kms_key:
            sse["KMSMasterKeyId"] = target.kms_key
        self.update(aws, target, SSESpecification=sse)


class DeletionProtection(_TableCheck):
    key = "deletion-protection"
    title = "deletion protection is on"
    severity = Status.WARN

    def read(self, aws: Aws, target: Target) -> Any:
        return bool(self.describe_table(aws, target).get("DeletionProtectionEnabled"))

    def satisfied(self, target: Target, current: Any) -> bool:
        return bool(current)

    def describe(self, current: Any) -> str:
        return "deletion protection is " + ("on" if current else "off")

    def change(self, target: Target, current: Any) -> str:
        return "turn on deletion protection"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        self.update(aws, target, DeletionProtectionEnabled=True)


def table_checks(table: str | None) -> list[Check]:
    return [
        TableExists(table),
        Billing(table),
        PointInTimeRecovery(table),
        Encryption(table),
        DeletionProtection(table),
    ]
