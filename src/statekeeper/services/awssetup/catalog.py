"""The one list of settings that bootstrap applies and doctor audits."""

from __future__ import annotations

from statekeeper.services.awssetup.bucket import bucket_checks
from statekeeper.services.awssetup.checks import Check
from statekeeper.services.awssetup.context import Target
from statekeeper.services.awssetup.replication import replication_checks
from statekeeper.services.awssetup.table import table_checks

__all__ = ["settings_checks"]


def settings_checks(target: Target) -> list[Check]:
    """State bucket, replica bucket, replication, lock table: in the order they are built."""
    checks = bucket_checks(target.main)
    replica = target.replica
    if replica is not None:
        checks += bucket_checks(replica)
    checks += replication_checks(target.bucket)
    checks += table_checks(target.table)
    return checks
