"""The one list of settings that bootstrap applies and doctor audits."""

from __future__ import annotations

from statekeeper.awssetup.bucket import (
    BucketExists,
    Encryption,
    Ownership,
    PublicAccessBlock,
    Versioning,
)
from statekeeper.awssetup.bucket_rules import (
    Lifecycle,
    Logging,
    PolicyEncryptedUploads,
    PolicyTls,
)
from statekeeper.awssetup.checks import Check
from statekeeper.awssetup.context import BucketRef, Target
from statekeeper.awssetup.replication import replication_checks
from statekeeper.awssetup.table import table_checks

__all__ = ["bucket_checks", "settings_checks"]


def bucket_checks(ref: BucketRef) -> list[Check]:
    """Every setting of one bucket, existence first."""
    return [
        BucketExists(ref),
        Ownership(ref),
        Versioning(ref),
        Encryption(ref),
        PublicAccessBlock(ref),
        PolicyTls(ref),
        PolicyEncryptedUploads(ref),
        Lifecycle(ref),
        Logging(ref),
    ]


def settings_checks(target: Target) -> list[Check]:
    """State bucket, replica bucket, replication, lock table: in the order they are built."""
    checks = bucket_checks(target.main)
    replica = target.replica
    if replica is not None:
        checks += bucket_checks(replica)
    checks += replication_checks(target.bucket)
    checks += table_checks(target.table)
    return checks
