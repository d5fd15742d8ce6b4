"""What AWS accepts as a bucket, table and region name: one rule each, for every way in.

``bootstrap``, ``doctor`` and ``iam-policy`` check their flags with these, and
the store and lock URLs, ``AWS_REGION``, ``AWS_DEFAULT_REGION`` and the
profile's region are checked with the same rules where the boto3 clients are
made: a bad name is one line and exit 2 naming where it was read, never
botocore's traceback.
"""

from __future__ import annotations

import re

from statekeeper.errors import BadRequest

__all__ = ["region_error", "validate_bucket_name", "validate_region", "validate_table_name"]

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
#: A us-east-1 bucket made before March 2018 may have capitals and '_' and be 255
#: long: an existing bucket of that kind is still a store, none is made so.
_LEGACY_BUCKET = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_TABLE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


def validate_bucket_name(name: str, what: str = "bucket", *, legacy: bool = False) -> str:
    """An S3 bucket name as AWS accepts it, or a BadRequest saying why not.

    ``legacy`` also accepts the names of old us-east-1 buckets (for a bucket that
    is only used, never created).
    """
    if legacy and _LEGACY_BUCKET.match(name):
        return name
    if not _BUCKET.match(name) or ".." in name or re.match(r"^\d+\.\d+\.\d+\.\d+$", name):
        raise BadRequest(
            f"{name!r} is not a valid {what} name: use 3-63 lowercase letters, digits, "
            "hyphens and dots, starting and ending with a letter or digit"
        )
    return name


def validate_table_name(name: str) -> str:
    if not _TABLE.match(name):
        raise BadRequest(
            f"{name!r} is not a valid DynamoDB table name: use 3-255 letters, digits, "
            "'_', '-' and '.'"
        )
    return name


def region_error(region: str, source: str | None = None) -> BadRequest:
    """The refusal of ``region`` (``source``: where it was read, such as ``AWS_REGION`` or
    the URL's ``?region=``; none for a flag, which the command line shows)."""
    where = f" (from {source})" if source else ""
    return BadRequest(f"{region!r}{where} is not an AWS region name (e.g. us-east-1, eu-west-2)")


def validate_region(region: str, source: str | None = None) -> str:
    if not _REGION.match(region):
        raise region_error(region, source)
    return region
