"""Checks of one S3 bucket's basics: existence and region, object ownership,
versioning, default encryption, public access block (the rest: ``bucket_rules``)."""

from __future__ import annotations

from typing import Any

from statekeeper.awssetup.checks import ABSENT, Check, Status, aws_call
from statekeeper.awssetup.context import Aws, BucketRef, Target, kms_tail
from statekeeper.errors import ConfigError

__all__ = [
    "BucketCheck",
    "BucketExists",
    "Encryption",
    "Ownership",
    "PublicAccessBlock",
    "Versioning",
    "bucket_region",
]

_PAB_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


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


class BucketCheck(Check):
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


class BucketExists(BucketCheck):
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


class Ownership(BucketCheck):
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


class Versioning(BucketCheck):
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


class Encryption(BucketCheck):
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


class PublicAccessBlock(BucketCheck):
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
