"""What a bootstrap or doctor run is about, and the AWS clients it talks through.

The :class:`Target` names the bucket, table and options; the :class:`Aws`
object makes boto3 clients lazily (through :mod:`statekeeper.storage.aws._boto`,
so endpoints and credentials come the boto3 way) and remembers facts read
once per run, such as the account ID.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from statekeeper.errors import BadRequest
from statekeeper.storage.aws.names import validate_bucket_name, validate_region, validate_table_name

__all__ = [
    "Aws",
    "BucketRef",
    "Target",
    "kms_tail",
    "partition",
]


def partition(region: str) -> str:
    """The ARN partition a region belongs to."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def kms_tail(key: str) -> str:
    """``alias/x`` or ``key/uuid`` (or a bare key ID) from any way of naming a KMS key."""
    if key.startswith("arn:"):
        return key.split(":", 5)[-1]
    return key


@dataclass(frozen=True)
class BucketRef:
    """One bucket the checks look after: the state bucket or its replica.

    ``role`` prefixes check IDs (``bucket.versioning``, ``replica.versioning``).
    ``kms_key`` None means any default encryption is accepted (AES256 applied
    when there is none); a key means SSE-KMS with that key and a bucket key.
    """

    name: str
    region: str
    role: str = "bucket"
    kms_key: str | None = None

    @property
    def arn(self) -> str:
        return f"arn:{partition(self.region)}:s3:::{self.name}"


@dataclass
class Target:
    """What to create or audit. ``None`` means "accept what is there"."""

    bucket: str
    region: str
    table: str | None = None
    kms_key: str | None = None
    #: Days after which noncurrent versions expire; None accepts any existing rule (90 if none).
    noncurrent_days: int | None = None
    log_bucket: str | None = None
    replica_region: str | None = None
    replica_bucket: str | None = None
    replica_kms_key: str | None = None

    @property
    def main(self) -> BucketRef:
        return BucketRef(self.bucket, self.region, "bucket", self.kms_key)

    @property
    def replica(self) -> BucketRef | None:
        if not self.replica_region:
            return None
        name = self.replica_bucket or f"{self.bucket}-replica"
        return BucketRef(name, self.replica_region, "replica", self.replica_kms_key)

    def validate(self) -> Target:
        validate_bucket_name(self.bucket)
        validate_region(self.region)
        if self.table is not None:
            validate_table_name(self.table)
        if self.noncurrent_days is not None and self.noncurrent_days < 1:
            raise BadRequest("--noncurrent-days must be at least 1")
        if self.log_bucket is not None:
            validate_bucket_name(self.log_bucket, "log bucket")
            if self.log_bucket == self.bucket:
                raise BadRequest(
                    "--log-bucket must be another bucket: logging a bucket into itself "
                    "writes a log object for every log object"
                )
        if self.replica_region is not None:
            validate_region(self.replica_region)
            if self.replica_region == self.region:
                raise BadRequest("--replica-region must differ from the bucket's region")
            replica = self.replica
            assert replica is not None
            validate_bucket_name(replica.name, "replica bucket")
            if self.kms_key and not self.replica_kms_key:
                raise BadRequest(
                    "objects encrypted with a KMS key are replicated only with a key in the "
                    "replica region; pass --replica-kms-key (a key in "
                    f"{self.replica_region})"
                )
        elif self.replica_bucket or self.replica_kms_key:
            raise BadRequest("--replica-bucket and --replica-kms-key need --replica-region")
        return self


@dataclass
class Aws:
    """boto3 clients made on first use, one per (service, region)."""

    profile: str | None = None
    _clients: dict[tuple[str, str | None], Any] = field(default_factory=dict)
    _account: str | None = None

    def client(self, service: str, region: str | None = None) -> Any:
        from statekeeper.storage.aws import _boto

        key = (service, region)
        if key not in self._clients:
            self._clients[key] = _boto.client(service, region=region, profile=self.profile)
        return self._clients[key]

    def s3(self, region: str) -> Any:
        return self.client("s3", region)

    def dynamodb(self, region: str) -> Any:
        return self.client("dynamodb", region)

    def iam(self) -> Any:
        return self.client("iam")

    def default_region(self) -> str:
        """The region every client uses when none is given (AWS_REGION, profile, …)."""
        from statekeeper.storage.aws import _boto

        return _boto.region(None, self.profile)

    def account_id(self) -> str:
        if self._account is None:
            from statekeeper.storage.aws import _boto

            try:
                self._account = str(self.client("sts").get_caller_identity()["Account"])
            except (BotoCoreError, ClientError) as exc:
                _boto.translate(exc, "sts:GetCallerIdentity", "the AWS account")
        return self._account
