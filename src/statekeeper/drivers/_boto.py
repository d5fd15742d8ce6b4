"""boto3 clients configured once, and botocore errors translated once.

Endpoints, credentials and region come the boto3 way (profiles,
``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_DYNAMODB``,
instance roles). On top of that: standard-mode retries with backoff for
throttling, 5xx and timeouts; checksums only when required (S3-compatible
services such as MinIO and Ceph reject the newer default checksums); and
path-style addressing when asked for (``?path_style=true``) or when an
endpoint override is set.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import boto3
import botocore.exceptions
from botocore.config import Config

from statekeeper.errors import AccessDenied, ConfigError, StorageError

__all__ = ["AWS_ERRORS", "client", "error_code", "status_code", "translate"]

#: Everything a boto3 call raises for a service or transport failure.
AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)

_SESSIONS: dict[str | None, boto3.session.Session] = {}


def _session(profile: str | None) -> boto3.session.Session:
    if profile not in _SESSIONS:
        try:
            _SESSIONS[profile] = boto3.session.Session(profile_name=profile)
        except botocore.exceptions.ProfileNotFound as exc:
            raise ConfigError(f"the AWS profile {profile!r} is not configured: {exc}") from exc
    return _SESSIONS[profile]


def client(
    service: str,
    *,
    region: str | None = None,
    profile: str | None = None,
    path_style: bool | None = None,
    max_attempts: int = 8,
) -> Any:
    """A boto3 client for ``service`` ("s3", "dynamodb", …) with our defaults."""
    endpoint_override = bool(
        os.environ.get("AWS_ENDPOINT_URL") or os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}")
    )
    if path_style is None:
        path_style = endpoint_override
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,
        s3={"addressing_style": "path" if path_style else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = _session(profile)
    region = region or session.region_name or "us-east-1"
    return session.client(service, region_name=region, config=config)  # type: ignore[call-overload]


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def status_code(exc: BaseException) -> int:
    """The HTTP status of a failed call (0 when it never got an answer)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def translate(exc: Exception, action: str, resource: str) -> NoReturn:
    """Raise our own error for a botocore failure, naming the action and resource."""
    code = error_code(exc)
    if code in (
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
    ):
        raise AccessDenied(
            f"AWS denied {action} on {resource} ({code}); grant the permission to the "
            "credentials in use (see `statekeeper iam-policy`)"
        ) from exc
    if code == "NoSuchBucket":
        bucket = (
            exc.response.get("Error", {}).get("BucketName")
            if isinstance(exc, botocore.exceptions.ClientError)
            else None
        )
        what = f"the S3 bucket {bucket!r}" if bucket else f"the bucket of {resource}"
        raise StorageError(
            f"{what} does not exist ({action} failed with NoSuchBucket); create it first "
            "(see `statekeeper bootstrap`) or correct the store URL"
        ) from exc
    if code == "ResourceNotFoundException":
        raise StorageError(
            f"{resource} does not exist ({action} failed with {code}); create it first "
            "(see `statekeeper bootstrap`) or correct the lock URL"
        ) from exc
    if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraint"):
        raise ConfigError(
            f"{action} on {resource} was sent to the wrong AWS region ({code}); "
            "give the bucket's region with ?region=… or AWS_REGION"
        ) from exc
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        raise ConfigError(
            "no AWS credentials were found; set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        ) from exc
    if isinstance(
        exc,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError,
    ):
        raise StorageError(f"{action} on {resource} could not reach AWS: {exc}") from exc
    raise StorageError(
        f"{action} on {resource} failed: {code or type(exc).__name__}: {exc}"
    ) from exc
