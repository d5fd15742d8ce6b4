"""Checks of one S3 bucket: existence, ownership, versioning, encryption,
public access, TLS-only and encrypted-uploads policy, lifecycle, access logs."""

from __future__ import annotations

import json
from typing import Any

from statekeeper.errors import ConfigError
from statekeeper.services.awssetup import policies
from statekeeper.services.awssetup.checks import ABSENT, Check, Status, aws_call
from statekeeper.services.awssetup.context import Aws, BucketRef, Target, kms_tail

__all__ = ["bucket_checks", "bucket_region"]

_PAB_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
LIFECYCLE_RULE_ID = "statekeeper-noncurrent-versions"
DEFAULT_NONCURRENT_DAYS = 90
ABORT_MULTIPART_DAYS = 7


def bucket_region(aws: Aws, name: str, region: str) -> Any:
    """The region a bucket lives in, or ABSENT when it does not exist."""
    s3 = aws.s3(region)
    found = aws_call(
        "s3:HeadBucket",
        f"bucket {name}",
        s3.head_bucket,
        Bucket=name,
        absent=("404", "NoSuchBucket", "NotFound"),
    )
    if found is ABSENT:
        return ABSENT
    location = aws_call(
        "s3:GetBucketLocation", f"bucket {name}", s3.get_bucket_location, Bucket=name
    )
    constraint = location.get("LocationConstraint")
    # us-east-1 answers with no constraint; very old EU buckets answer "EU".
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(constraint, constraint)


class _BucketCheck(Check):
    """A check of one bucket setting; ``ref`` says which bucket."""

    key: str

    def __init__(self, ref: BucketRef) -> None:
        self.ref = ref
        self.id = f"{ref.role}.{self.key}"
        self.needs = f"bucket:{ref.name}"

    def applies(self, target: Target) -> bool:
        return self.ref.role == "bucket" or target.replica is not None

    def client(self, aws: Aws) -> Any:
        return aws.s3(self.ref.region)

    @property
    def where(self) -> str:
        return f"bucket {self.ref.name}"


class BucketExists(_BucketCheck):
    key = "exists"
    title = "the bucket exists in its region"
    safe_fix = False

    def __init__(self, ref: BucketRef) -> None:
        super().__init__(ref)
        self.needs = None
        self.creates = f"bucket:{ref.name}"

    def read(self, aws: Aws, target: Target) -> Any:
        return bucket_region(aws, self.ref.name, self.ref.region)

    def satisfied(self, target: Target, current: Any) -> bool:
        return bool(current == self.ref.region)

    def describe(self, current: Any) -> str:
        if current is ABSENT:
            return f"bucket {self.ref.name} does not exist"
        return f"bucket {self.ref.name} exists in {current}"

    def change(self, target: Target, current: Any) -> str:
        return f"create bucket {self.ref.name} in {self.ref.region}"

    def fix_hint(self, target: Target) -> str:
        return f"statekeeper bootstrap --bucket {self.ref.name} --region {self.ref.region}"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        if current is not ABSENT:
            raise ConfigError(
                f"bucket {self.ref.name} exists in {current}, not {self.ref.region}; "
                f"pass --region {current} (a bucket cannot move between regions)"
            )
        kwargs: dict[str, Any] = {"Bucket": self.ref.name, "ObjectOwnership": "BucketOwnerEnforced"}
        # us-east-1 refuses a LocationConstraint naming itself.
        if self.ref.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.ref.region}
        created = aws_call(
            "s3:CreateBucket",
            self.where,
            self.client(aws).create_bucket,
            absent=("BucketAlreadyOwnedByYou", "BucketAlreadyExists"),
            **kwargs,
        )
        if created is ABSENT and bucket_region(aws, self.ref.name, self.ref.region) is ABSENT:
            raise ConfigError(
                f"the bucket name {self.ref.name!r} is taken by another AWS account "
                "(bucket names are global); choose another name"
            )


class Ownership(_BucketCheck):
    key = "ownership"
    title = "object ownership is BucketOwnerEnforced (ACLs disabled)"
    severity = Status.WARN
    # A backend with `acl = …` set would be refused once ACLs are disabled.
    safe_fix = False

    def read(self, aws: Aws, target: Target) -> Any:
        got = aws_call(
            "s3:GetBucketOwnershipControls",
            self.where,
            self.client(aws).get_bucket_ownership_controls,
            Bucket=self.ref.name,
            absent=("OwnershipControlsNotFoundError",),
        )
        if got is ABSENT:
            return ABSENT
        rules = got.get("OwnershipControls", {}).get("Rules", [])
        return rules[0].get("ObjectOwnership") if rules else ABSENT

    def satisfied(self, target: Target, current: Any) -> bool:
        return bool(current == "BucketOwnerEnforced")

    def describe(self, current: Any) -> str:
        if current is ABSENT:
            return "object ownership is not set (ACLs are in use)"
        return f"object ownership is {current}"

    def change(self, target: Target, current: Any) -> str:
        return "set object ownership to BucketOwnerEnforced"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        aws_call(
            "s3:PutBucketOwnershipControls",
            self.where,
            self.client(aws).put_bucket_ownership_controls,
            Bucket=self.ref.name,
            OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        )


class Versioning(_BucketCheck):
    key = "versioning"
    title = "versioning is enabled"

    def read(self, aws: Aws, target: Target) -> Any:
        got = aws_call(
            "s3:GetBucketVersioning",
            self.where,
            self.client(aws).get_bucket_versioning,
            Bucket=self.ref.name,
        )
        return got.get("Status") or ABSENT

    def satisfied(self, target: Target, current: Any) -> bool:
        return bool(current == "Enabled")

    def describe(self, current: Any) -> str:
        if current is ABSENT:
            return "versioning was never enabled: an overwritten state is lost"
        if current == "Enabled":
            return "versioning is enabled"
        return f"versioning is {current}: an overwritten state is lost"

    def change(self, target: Target, current: Any) -> str:
        return "enable versioning"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        aws_call(
            "s3:PutBucketVersioning",
            self.where,
            self.client(aws).put_bucket_versioning,
            Bucket=self.ref.name,
            VersioningConfiguration={"Status": "Enabled"},
        )


class Encryption(_BucketCheck):
    key = "encryption"
    title = "default encryption is on"

    def read(self, aws: Aws, target: Target) -> Any:
        got = aws_call(
            "s3:GetEncryptionConfiguration",
            self.where,
            self.client(aws).get_bucket_encryption,
            Bucket=self.ref.name,
            absent=("ServerSideEncryptionConfigurationNotFoundError",),
        )
        if got is ABSENT:
            return ABSENT
        rules = got.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        if not rules:
            return ABSENT
        default = rules[0].get("ApplyServerSideEncryptionByDefault", {})
        return (
            default.get("SSEAlgorithm", ""),
            default.get("KMSMasterKeyID") or "",
            bool(rules[0].get("BucketKeyEnabled")),
        )

    def satisfied(self, target: Target, current: Any) -> bool:
        if current is ABSENT:
            return False
        algorithm, key, bucket_key = current
        if self.ref.kms_key:
            return bool(
                algorithm == "aws:kms"
                and kms_tail(key) == kms_tail(self.ref.kms_key)
                and bucket_key
            )
        return algorithm in ("AES256", "aws:kms", "aws:kms:dsse")

    def describe(self, current: Any) -> str:
        if current is ABSENT:
            return "no default encryption is configured"
        algorithm, key, bucket_key = current
        text = f"default encryption is {algorithm}"
        if key:
            text += f" with key {key}"
        if algorithm.startswith("aws:kms"):
            text += ", bucket key " + ("on" if bucket_key else "off")
        return text

    def change(self, target: Target, current: Any) -> str:
        if self.ref.kms_key:
            return f"set default encryption to aws:kms with {self.ref.kms_key} and a bucket key"
        return "set default encryption to AES256 (SSE-S3)"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        rule: dict[str, Any]
        if self.ref.kms_key:
            rule = {
                "ApplyServerSideEncryptionByDefault": {
                    "SSEAlgorithm": "aws:kms",
                    "KMSMasterKeyID": self.ref.kms_key,
                },
                "BucketKeyEnabled": True,
            }
        else:
            rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        aws_call(
            "s3:PutEncryptionConfiguration",
            self.where,
            self.client(aws).put_bucket_encryption,
            Bucket=self.ref.name,
            ServerSideEncryptionConfiguration={"Rules": [rule]},
        )


class PublicAccessBlock(_BucketCheck):
    key = "public-access-block"
    title = "all four public access block flags are on"

    def read(self, aws: Aws, target: Target) -> Any:
        got = aws_call(
            "s3:GetBucketPublicAccessBlock",
            self.where,
            self.client(aws).get_public_access_block,
            Bucket=self.ref.name,
            absent=("NoSuchPublicAccessBlockConfiguration",),
        )
        if got is ABSENT:
            return ABSENT
        config = got.get("PublicAccessBlockConfiguration", {})
        return {flag: bool(config.get(flag)) for flag in _PAB_FLAGS}

    def satisfied(self, target: Target, current: Any) -> bool:
        return current is not ABSENT and all(current.values())

    def describe(self, current: Any) -> str:
        if current is ABSENT:
            return "no public access block: public ACLs and policies are allowed"
        off = [flag for flag, on in current.items() if not on]
        if not off:
            return "public access is blocked (all four flags on)"
        return "public access block is incomplete: " + ", ".join(off) + " off"

    def change(self, target: Target, current: Any) -> str:
        return "turn on all four public access block flags"

    def apply(self, aws: Aws, target: Target, current: Any) -> None:
        aws_call(
            "s3:PutBucketPublicAccessBlock",
            self.where,
            self.client(aws).put_public_access_block,
            Bucket=self.ref.name,
            PublicAccessBlockConfiguration=dict.fromkeys(_PAB_FLAGS, True),
        )


class _PolicyCheck(_BucketCheck):
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


class Lifecycle(_BucketCheck):
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


class Logging(_BucketCheck):
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
