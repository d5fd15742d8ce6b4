"""Checks of a bucket's rules: the TLS-only and encrypted-uploads policy statements,
the lifecycle rule for old versions, and server access logging."""

from __future__ import annotations

import json
from typing import Any

from statekeeper.awssetup import policies
from statekeeper.awssetup.bucket import BucketCheck, bucket_region
from statekeeper.awssetup.checks import ABSENT, Status, aws_call
from statekeeper.awssetup.context import Aws, Target
from statekeeper.errors import ConfigError

__all__ = ["Lifecycle", "Logging", "PolicyEncryptedUploads", "PolicyTls"]

LIFECYCLE_RULE_ID = "statekeeper-noncurrent-versions"
DEFAULT_NONCURRENT_DAYS = 90
ABORT_MULTIPART_DAYS = 7


class _PolicyCheck(BucketCheck):
    def read(self, aws: Aws, target: Target) -> Any:
        got = aws_call(
            "s3:GetBucketPolicy",
            self.where,
            self.client(aws).get_bucket_policy,
            Bucket=self.ref.name,
            absent=("NoSuchBucketPolicy",),
        )
        return policies.parse_policy(None if got is ABSENT else got.get("Policy"))

    def statement(self) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        merged = policies.merge_statement(current, self.statement())
        aws_call(
            "s3:PutBucketPolicy",
            self.where,
            self.client(aws).put_bucket_policy,
            Bucket=self.ref.name,
            Policy=json.dumps(merged),
        )


class PolicyTls(_PolicyCheck):
    key = "policy-tls"
    title = "the bucket policy denies access without TLS"

    def satisfied(self, target: Target, current: Any) -> bool:
        return policies.denies_insecure_transport(current, self.ref)

    def describe(self, current: Any) -> str:
        if policies.denies_insecure_transport(current, self.ref):
            return "the bucket policy denies access without TLS (aws:SecureTransport)"
        return "the bucket policy does not deny plain-HTTP access"

    def change(self, target: Target, current: Any) -> str:
        return f"add the {policies.TLS_SID} statement to the bucket policy"

    def statement(self) -> dict[str, Any]:
        return policies.tls_statement(self.ref)


class PolicyEncryptedUploads(_PolicyCheck):
    key = "policy-encrypted-uploads"
    title = "the bucket policy denies uploads without server-side encryption"
    severity = Status.WARN
    # Backends without `encrypt = true` would be refused from then on.
    safe_fix = False

    def satisfied(self, target: Target, current: Any) -> bool:
        return policies.denies_unencrypted_uploads(current, self.ref)

    def describe(self, current: Any) -> str:
        wanted = "aws:kms" if self.ref.kms_key else "server-side encryption"
        if policies.denies_unencrypted_uploads(current, self.ref):
            return f"the bucket policy denies uploads without {wanted}"
        return f"the bucket policy does not deny uploads without {wanted}"

    def change(self, target: Target, current: Any) -> str:
        return f"add the {policies.ENCRYPTED_UPLOADS_SID} statement to the bucket policy"

    def fix_hint(self, target: Target) -> str:
        return (
            'make sure every backend "s3" block has encrypt = true, then run '
            f"statekeeper bootstrap (it will {self.change(target, ABSENT)})"
        )

    def statement(self) -> dict[str, Any]:
        return policies.encrypted_uploads_statement(self.ref)


def _whole_bucket(rule: dict[str, Any]) -> bool:
    if "Prefix" in rule:
        return not rule["Prefix"]
    filt = rule.get("Filter")
    return not filt or filt == {"Prefix": ""}


class Lifecycle(BucketCheck):
    key = "lifecycle"
    title = "noncurrent versions expire and incomplete uploads are aborted"
    severity = Status.WARN
    # Expiring old versions deletes history: only with the operator's say-so.
    safe_fix = False

    def read(self, aws: Aws, target: Target) -> Any:
        got = aws_call(
            "s3:GetLifecycleConfiguration",
            self.where,
            self.client(aws).get_bucket_lifecycle_configuration,
            Bucket=self.ref.name,
            absent=("NoSuchLifecycleConfiguration",),
        )
        return [] if got is ABSENT else got.get("Rules", [])

    def _found(self, rules: list[dict[str, Any]]) -> tuple[int | None, int | None]:
        noncurrent = abort = None
        for rule in rules:
            if rule.get("Status") != "Enabled" or not _whole_bucket(rule):
                continue
            days = rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
            if days is not None:
                noncurrent = days if noncurrent is None else min(noncurrent, days)
            after = rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
            if after is not None:
                abort = after if abort is None else min(abort, after)
        return noncurrent, abort

    def satisfied(self, target: Target, current: Any) -> bool:
        noncurrent, abort = self._found(current)
        if noncurrent is None or abort is None:
            return False
        return target.noncurrent_days is None or noncurrent == target.noncurrent_days

    def describe(self, current: Any) -> str:
        noncurrent, abort = self._found(current)
        parts = [
            "noncurrent versions never expire"
            if noncurrent is None
            else f"noncurrent versions expire after {noncurrent} days",
            "incomplete multipart uploads are kept forever"
            if abort is None
            else f"incomplete multipart uploads are aborted after {abort} days",
        ]
        return "; ".join(parts)

    def _days(self, target: Target) -> int:
        return target.noncurrent_days or DEFAULT_NONCURRENT_DAYS

    def change(self, target: Target, current: Any) -> str:
        return (
            f"add lifecycle rule {LIFECYCLE_RULE_ID}: expire noncurrent versions after "
            f"{self._days(target)} days, abort incomplete uploads after "
            f"{ABORT_MULTIPART_DAYS} days"
        )

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        ours = {
            "ID": LIFECYCLE_RULE_ID,
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "NoncurrentVersionExpiration": {"NoncurrentDays": self._days(target)},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
        }
        rules = [r for r in current if r.get("ID") != LIFECYCLE_RULE_ID]
        aws_call(
            "s3:PutLifecycleConfiguration",
            self.where,
            self.client(aws).put_bucket_lifecycle_configuration,
            Bucket=self.ref.name,
            LifecycleConfiguration={"Rules": [*rules, ours]},
        )


class Logging(BucketCheck):
    key = "access-logging"
    title = "server access logging is on"
    severity = Status.WARN

    def applies(self, target: Target) -> bool:
        return self.ref.role == "bucket"

    def status_when_unsatisfied(self, target: Target) -> Status:
        # Logging is optional: off is a note unless a log bucket was asked for.
        return self.severity if target.log_bucket else Status.SKIP

    def read(self, aws: Aws, target: Target) -> Any:
        got = aws_call(
            "s3:GetBucketLogging",
            self.where,
            self.client(aws).get_bucket_logging,
            Bucket=self.ref.name,
        )
        enabled = got.get("LoggingEnabled")
        if not enabled:
            return ABSENT
        return (enabled.get("TargetBucket", ""), enabled.get("TargetPrefix", ""))

    def satisfied(self, target: Target, current: Any) -> bool:
        if current is ABSENT:
            return False
        if target.log_bucket:
            return bool(current == (target.log_bucket, f"{self.ref.name}/"))
        return True

    def describe(self, current: Any) -> str:
        if current is ABSENT:
            return "server access logging is off"
        return f"access logs go to s3://{current[0]}/{current[1]}"

    def change(self, target: Target, current: Any) -> str:
        if not target.log_bucket:
            return "nothing (pass --log-bucket to turn access logging on)"
        return f"send access logs to s3://{target.log_bucket}/{self.ref.name}/"

    def fix_hint(self, target: Target) -> str:
        lb = target.log_bucket or "LOG_BUCKET"
        return f"statekeeper bootstrap --bucket {self.ref.name} --log-bucket {lb}"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        log_bucket = target.log_bucket
        assert log_bucket is not None
        where = bucket_region(aws, log_bucket, self.ref.region)
        if where is ABSENT:
            raise ConfigError(f"the log bucket {log_bucket} does not exist; create it first")
        if where != self.ref.region:
            raise ConfigError(
                f"the log bucket {log_bucket} is in {where}; S3 writes access logs only to a "
                f"bucket in the same region ({self.ref.region})"
            )
        # Grant the logging service write access to our prefix in the log bucket.
        s3 = self.client(aws)
        got = aws_call(
            "s3:GetBucketPolicy",
            f"bucket {log_bucket}",
            s3.get_bucket_policy,
            Bucket=log_bucket,
            absent=("NoSuchBucketPolicy",),
        )
        policy = policies.parse_policy(None if got is ABSENT else got.get("Policy"))
        grant = policies.log_delivery_statement(self.ref, log_bucket, aws.account_id())
        if grant not in policy["Statement"]:
            aws_call(
                "s3:PutBucketPolicy",
                f"bucket {log_bucket}",
                s3.put_bucket_policy,
                Bucket=log_bucket,
                Policy=json.dumps(policies.merge_statement(policy, grant)),
            )
        aws_call(
            "s3:PutBucketLogging",
            self.where,
            s3.put_bucket_logging,
            Bucket=self.ref.name,
            BucketLoggingStatus={
                "LoggingEnabled": {"TargetBucket": log_bucket, "TargetPrefix": f"{self.ref.name}/"}
            },
        )
