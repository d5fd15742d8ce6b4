"""boto3 clients configured once, and botocore errors translated once.

Endpoints, credentials and region come the boto3 way (profiles,
``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_DYNAMODB``,
instance roles). On top of that: standard-mode retries with backoff for
throttling, 5xx and timeouts; checksums only when required (S3-compatible
services such as MinIO and Ceph reject the newer default checksums); and
path-style addressing when asked for (``?path_style=true``) or when an
endpoint override is set. :class:`S3Bucket` is the bucket, key prefix and
encryption settings that ``s3://`` stores and ``s3lock://`` lock files share.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
import botocore.utils
from botocore.config import Config

from statekeeper.errors import AccessDenied, ConfigError, StorageError
from statekeeper.security.redaction import redact_urls, redacted
from statekeeper.storage.aws.names import region_error, validate_bucket_name, validate_region

if TYPE_CHECKING:
    from statekeeper.storage.registry import DriverURL

__all__ = [
    "AWS_ERRORS",
    "S3Bucket",
    "client",
    "denied",
    "error_code",
    "region",
    "status_code",
    "translate",
    "url_region",
]

#: Everything a boto3 call raises for a service or transport failure.
AWS_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)

S3_OPTIONS = {"region", "profile", "path_style", "sse", "kms_key_id"}
T = TypeVar("T")

_SESSIONS: dict[str | None, boto3.session.Session] = {}


def _session(profile: str | None) -> boto3.session.Session:
    if profile not in _SESSIONS:
        try:
            _SESSIONS[profile] = boto3.session.Session(profile_name=profile)
        except botocore.exceptions.ProfileNotFound as exc:
            raise ConfigError(f"the AWS profile {profile!r} is not configured: {exc}") from exc
    return _SESSIONS[profile]


def _chosen_region(explicit: str | None, profile: str | None) -> tuple[str, str | None]:
    """The region, and where it was read when not given (for the message refusing it)."""
    if explicit:
        return explicit, None
    if os.environ.get("AWS_REGION"):
        return os.environ["AWS_REGION"], "AWS_REGION"
    chosen = _session(profile).region_name
    if chosen:
        # boto3 reads AWS_DEFAULT_REGION before the profile's region.
        if os.environ.get("AWS_DEFAULT_REGION"):
            return chosen, "AWS_DEFAULT_REGION"
        return chosen, "the AWS profile's region"
    return "us-east-1", None


def region(explicit: str | None = None, profile: str | None = None) -> str:
    """The region every AWS client of statekeeper uses.

    As given (``?region=``, ``--region``), else ``AWS_REGION`` (which the AWS
    CLI and the SDKs honour, boto3 does not), else boto3's own choice
    (``AWS_DEFAULT_REGION``, the profile's ``region``), else ``us-east-1``.
    One that is no region name is refused as :func:`client` refuses it.
    """
    name, source = _chosen_region(explicit, profile)
    return _check_region("s3", name, source)


def _check_region(service: str, name: str, source: str | None = None) -> str:
    """``name``, when it is a region ``service`` can be called in; else a BadRequest
    naming ``source``, where it was read (exit 2).

    With an endpoint override the service names its own regions (Garage's
    ``garage``), so only what botocore itself refuses is refused then.
    """
    if not _endpoint(service):
        validate_region(name, source)
    try:
        botocore.utils.validate_region_name(name)
    except botocore.exceptions.InvalidRegionError as exc:
        raise region_error(name, source) from exc
    return name


def _endpoint(service: str) -> bool:
    """Whether an endpoint override is set for ``service``; one that is not an http(s)
    URL is refused (botocore's ValueError would be a traceback), without echoing a
    password it holds."""
    overridden = False
    for var in (f"AWS_ENDPOINT_URL_{service.upper()}", "AWS_ENDPOINT_URL"):
        value = os.environ.get(var)
        if not value:
            continue
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{var} {redacted(value)!r} is not a URL; write http(s)://HOST:PORT")
        overridden = True
    return overridden


def client(
    service: str,
    *,
    region: str | None = None,
    profile: str | None = None,
    path_style: bool | None = None,
    max_attempts: int = 8,
) -> Any:
    """A boto3 client for ``service`` ("s3", "dynamodb", …) with our defaults.

    Its region must be an AWS region name (exit 2 otherwise, naming where it was
    read). With an endpoint override the service names its own regions (Garage's
    ``garage``), so only what botocore itself refuses is refused then.
    """
    endpoint_override = _endpoint(service)
    name, source = _chosen_region(region, profile)
    _check_region(service, name, source)
    if path_style is None:
        path_style = endpoint_override
    # docs/operations.md#aws-clients says why each option is safe and what it costs.
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=60,
        # One connection for each thread that may call at once: the server's request
        # threads (anyio's 40) and a store's part and HEAD workers (8). Past the pool,
        # urllib3 opens a connection per call and throws it away afterwards.
        max_pool_connections=48,
        s3={"addressing_style": "path" if path_style else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return _session(profile).client(  # type: ignore[call-overload]
        service, region_name=name, config=config
    )


def error_code(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


#: The codes of a call refused for want of a permission. "403": botocore's code when it
#: could not read the answer's body (a HEAD has none; an answer in XML to a JSON call,
#: as moto's IAM enforcement gives DynamoDB's, is none it reads).
_DENIED = ("AccessDenied", "AccessDeniedException", "403")


def denied(exc: BaseException) -> bool:
    """The call was refused for want of a permission (translated: AccessDenied)."""
    return error_code(exc) in _DENIED


def status_code(exc: BaseException) -> int:
    """The HTTP status of a failed call (0 when it never got an answer)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def _missing_bucket(what: str, why: str, correct: str = "") -> StorageError:
    fix = "create it first (see `statekeeper bootstrap`)" + (f" or {correct}" if correct else "")
    return StorageError(f"{what} does not exist ({why}); {fix}")


def translate(exc: Exception, action: str, resource: str, correct: str = "") -> NoReturn:
    """Raise our own error for a botocore failure, naming the action and resource.

    ``correct``: the advice to correct what named the resource (``DriverURL.correct``),
    given where a missing bucket or table may be a mistake in it.
    """
    code = error_code(exc)
    fix = "create it first (see `statekeeper bootstrap`)" + (f" or {correct}" if correct else "")
    if denied(exc) or code in (
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
        raise _missing_bucket(what, f"{action} failed with {code}", correct) from exc
    if code == "ResourceNotFoundException":
        raise StorageError(
            f"{resource} does not exist ({action} failed with {code}); {fix}"
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
        # botocore quotes the URL it called: the endpoint override's password with it.
        raise StorageError(
            f"{action} on {resource} could not reach AWS: {redact_urls(str(exc))}"
        ) from exc
    raise StorageError(
        f"{action} on {resource} failed: {code or type(exc).__name__}: {redact_urls(str(exc))}"
    ) from exc


def _flag(url: DriverURL, name: str) -> bool | None:
    value = url.options.get(name)
    if value is None:
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"{url.raw!r}: {name}={value!r} must be true or false")


def url_region(url: DriverURL, service: str) -> str | None:
    """The URL's ``?region=``, refused (naming it as the source) when ``service`` cannot be
    called there; None when the URL gives none."""
    region = url.options.get("region")
    return _check_region(service, region, "the URL's ?region=") if region else None


@dataclass(frozen=True)
class S3Bucket:
    """A bucket and key prefix with a configured client: what s3:// and s3lock:// share."""

    bucket: str
    prefix: str
    client: Any
    sse: str | None = None
    kms_key_id: str | None = None
    region: str | None = None
    profile: str | None = None
    path_style: bool | None = None
    #: The advice to correct the URL that named the bucket (``DriverURL.correct``).
    correct: str = ""

    @classmethod
    def from_url(cls, url: DriverURL) -> S3Bucket:
        url.reject_unknown_options(S3_OPTIONS)
        bucket = url.netloc
        if not bucket:
            raise ConfigError(f"{url.raw!r} names no bucket; use {url.scheme}://BUCKET[/PREFIX]")
        validate_bucket_name(bucket, legacy=True)
        prefix = url.path.strip("/")
        if "//" in prefix:
            raise ConfigError(f"{url.raw!r}: the key prefix must not contain '//'")
        sse = url.options.get("sse") or None
        kms_key_id = url.options.get("kms_key_id") or None
        if kms_key_id and sse is None:
            sse = "aws:kms"
        if sse not in (None, "AES256", "aws:kms"):
            raise ConfigError(f"{url.raw!r}: sse={sse!r} must be AES256 or aws:kms")
        if kms_key_id and sse != "aws:kms":
            raise ConfigError(f"{url.raw!r}: kms_key_id needs sse=aws:kms (not {sse})")
        return cls.connect(
            bucket,
            prefix,
            sse=sse,
            kms_key_id=kms_key_id,
            region=url_region(url, "s3"),
            profile=url.options.get("profile") or None,
            path_style=_flag(url, "path_style"),
            correct=url.correct(),
        )

    @classmethod
    def connect(
        cls,
        bucket: str,
        prefix: str,
        *,
        sse: str | None = None,
        kms_key_id: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        path_style: bool | None = None,
        correct: str = "",
    ) -> S3Bucket:
        """A handle with its own boto3 client (two handles are two independent clients)."""
        s3 = client("s3", region=region, profile=profile, path_style=path_style)
        return cls(bucket, prefix, s3, sse, kms_key_id, region, profile, path_style, correct)

    def reconnect(self) -> S3Bucket:
        """The same place and options with a new client."""
        return S3Bucket.connect(
            self.bucket,
            self.prefix,
            sse=self.sse,
            kms_key_id=self.kms_key_id,
            region=self.region,
            profile=self.profile,
            path_style=self.path_style,
            correct=self.correct,
        )

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def name(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"

    def sse_args(self) -> dict[str, Any]:
        """Server-side encryption parameters for every object written."""
        if self.sse is None:
            return {}
        args: dict[str, Any] = {"ServerSideEncryption": self.sse}
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args

    def probe(self) -> None:
        """One request, no object read: HeadBucket (needs s3:ListBucket), or, under a
        prefix, a listing of at most one key there.

        The listing carries the ``s3:prefix`` that a policy limited to the prefix
        (``statekeeper iam-policy --prefix``) allows ``s3:ListBucket`` for; HeadBucket
        carries none, and that condition refuses it.
        """

        operation = "s3:ListObjectsV2" if self.prefix else "s3:HeadBucket"

        def missing(exc: Exception) -> None:
            # A HEAD answer has no body: a missing bucket is a bare 404, no NoSuchBucket.
            if status_code(exc) == 404:
                raise _missing_bucket(
                    f"the S3 bucket {self.bucket!r}", f"{operation} answered 404", self.correct
                ) from exc
            translate(exc, "s3:ListBucket", self.uri(), self.correct)

        if self.prefix:
            self.call(
                "s3:ListBucket",
                "",
                self.client.list_objects_v2,
                missing,
                Prefix=self.key(""),
                MaxKeys=1,
            )
        else:
            self.call("s3:ListBucket", "", self.client.head_bucket, missing)

    def call(
        self,
        action: str,
        key: str,
        fn: Callable[..., T],
        handle: Callable[[Exception], T] | None = None,
        **kwargs: Any,
    ) -> T:
        """Run one S3 call; ``handle`` may turn an expected error into a value."""
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except AWS_ERRORS as exc:
            if handle is not None:
                return handle(exc)
            self.translate(exc, action, key)

    def translate(self, exc: Exception, action: str, key: str = "") -> NoReturn:
        """:func:`translate` for a call on ``key`` in this bucket."""
        translate(exc, action, self.uri(key), self.correct)
