"""Cross-region replication: the replica bucket's role and the replication rule.

The replica bucket itself is checked with the same bucket checks as the state
bucket (``replica.*``). Delete markers are not replicated, so deleting a
state (or a workspace) never reaches the replica.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import unquote

from statekeeper.awssetup import policies
from statekeeper.awssetup.checks import ABSENT, Check, Status, aws_call
from statekeeper.awssetup.context import Aws, Target, partition

__all__ = ["replica_of", "replication_checks", "role_name"]

RULE_ID = "statekeeper-replica"
ROLE_POLICY = "statekeeper-replication"


def role_name(bucket: str) -> str:
    """The IAM role S3 assumes to replicate ``bucket`` (at most 64 characters)."""
    name = f"statekeeper-replication-{bucket}"
    if len(name) > 64:
        name = name[:55] + "-" + hashlib.sha256(bucket.encode()).hexdigest()[:8]
    return name


class ReplicationRole(Check):
    id = "replication.role"
    title = "the replication role exists with its policy"
    needs = None

    def applies(self, target: Target) -> bool:
        return target.replica is not None

    def read(self, aws: Aws, target: Target) -> Any:
        name = role_name(target.bucket)
        role = aws_call(
            "iam:GetRole",
            f"role {name}",
            aws.iam().get_role,
            RoleName=name,
            absent=("NoSuchEntity",),
        )
        if role is ABSENT:
            return ABSENT
        got = aws_call(
            "iam:GetRolePolicy",
            f"role {name}",
            aws.iam().get_role_policy,
            RoleName=name,
            PolicyName=ROLE_POLICY,
            absent=("NoSuchEntity",),
        )
        document = None if got is ABSENT else got["PolicyDocument"]
        if isinstance(document, str):
            document = json.loads(unquote(document))
        return document

    def satisfied(self, target: Target, current: Any) -> bool:
        """Every statement we would write is there (others, e.g. for KMS, may be too)."""
        replica = target.replica
        assert replica is not None
        if not isinstance(current, dict):
            return False
        wanted = policies.replication_role_policy(target.main, replica)["Statement"]
        return all(statement in current.get("Statement", []) for statement in wanted)

    def describe(self, current: Any) -> str:
        name = "the replication role"
        if current is ABSENT:
            return f"{name} does not exist"
        if current is None:
            return f"{name} has no {ROLE_POLICY} policy"
        return f"{name} has the {ROLE_POLICY} policy"

    def change(self, target: Target, current: Any) -> str:
        return f"create IAM role {role_name(target.bucket)} with its replication policy"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        replica = target.replica
        assert replica is not None
        name = role_name(target.bucket)
        if current is ABSENT:
            aws_call(
                "iam:CreateRole",
                f"role {name}",
                aws.iam().create_role,
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(policies.replication_trust_policy()),
                Description=f"S3 replication of {target.bucket} to {replica.name}",
            )
        aws_call(
            "iam:PutRolePolicy",
            f"role {name}",
            aws.iam().put_role_policy,
            RoleName=name,
            PolicyName=ROLE_POLICY,
            PolicyDocument=json.dumps(policies.replication_role_policy(target.main, replica)),
        )


class ReplicationRule(Check):
    id = "replication.rule"
    title = "the bucket replicates to a versioned bucket in another region"
    severity = Status.WARN

    def __init__(self, bucket: str) -> None:
        self.needs = f"bucket:{bucket}"

    def status_when_unsatisfied(self, target: Target) -> Status:
        return self.severity if target.replica else Status.SKIP

    def read(self, aws: Aws, target: Target) -> Any:
        got = aws_call(
            "s3:GetReplicationConfiguration",
            f"bucket {target.bucket}",
            aws.s3(target.region).get_bucket_replication,
            Bucket=target.bucket,
            absent=("ReplicationConfigurationNotFoundError",),
        )
        if got is ABSENT:
            return ABSENT
        config = got["ReplicationConfiguration"]
        rules = [r for r in config.get("Rules", []) if r.get("Status") == "Enabled"]
        return {
            "Role": config.get("Role", ""),
            "Destinations": sorted(r["Destination"]["Bucket"] for r in rules),
        }

    def _role_arn(self, aws: Aws, target: Target) -> str:
        return f"arn:{partition(target.region)}:iam::{aws.account_id()}:role/" + role_name(
            target.bucket
        )

    def satisfied(self, target: Target, current: Any) -> bool:
        if current is ABSENT or not current["Destinations"]:
            return False
        replica = target.replica
        return replica is None or replica.arn in current["Destinations"]

    def describe(self, current: Any) -> str:
        if current is ABSENT or not current["Destinations"]:
            return "the bucket is not replicated"
        return "the bucket replicates to " + ", ".join(current["Destinations"])

    def change(self, target: Target, current: Any) -> str:
        replica = target.replica
        if replica is None:
            return "nothing (pass --replica-region to replicate)"
        return f"replicate every new version to {replica.name} in {replica.region}"

    def fix_hint(self, target: Target) -> str:
        region = target.replica_region or "OTHER_REGION"
        return f"statekeeper bootstrap --bucket {target.bucket} --replica-region {region}"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        replica = target.replica
        assert replica is not None
        rule: dict[str, Any] = {
            "ID": RULE_ID,
            "Priority": 1,
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "DeleteMarkerReplication": {"Status": "Disabled"},
            "Destination": {"Bucket": replica.arn},
        }
        if target.kms_key and replica.kms_key:
            rule["SourceSelectionCriteria"] = {"SseKmsEncryptedObjects": {"Status": "Enabled"}}
            rule["Destination"]["EncryptionConfiguration"] = {"ReplicaKmsKeyID": replica.kms_key}
        aws_call(
            "s3:PutReplicationConfiguration",
            f"bucket {target.bucket}",
            aws.s3(target.region).put_bucket_replication,
            Bucket=target.bucket,
            ReplicationConfiguration={"Role": self._role_arn(aws, target), "Rules": [rule]},
        )


def replica_of(aws: Aws, target: Target) -> tuple[str, str] | None:
    """The (bucket, role ARN) a bucket replicates to, from its replication configuration."""
    got = aws_call(
        "s3:GetReplicationConfiguration",
        f"bucket {target.bucket}",
        aws.s3(target.region).get_bucket_replication,
        Bucket=target.bucket,
        absent=("ReplicationConfigurationNotFoundError", "NoSuchBucket"),
    )
    if got is ABSENT:
        return None
    config = got["ReplicationConfiguration"]
    for rule in config.get("Rules", []):
        if rule.get("Status") == "Enabled":
            return rule["Destination"]["Bucket"].rsplit(":", 1)[-1], config.get("Role", "")
    return None


def replication_checks(bucket: str) -> list[Check]:
    return [ReplicationRole(), ReplicationRule(bucket)]
