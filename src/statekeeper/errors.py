"""The one exception tree of statekeeper.

Every error the project raises on purpose is a :class:`StatekeeperError`. Each
class knows the HTTP status the server answers with, the exit code the CLI
ends with, and a short machine-readable ``code`` for JSON bodies. Vendor
exceptions (botocore, sqlite3) are translated into this tree once, at the
driver boundary, and chained with ``raise ... from``.

::

    StatekeeperError                     500  exit 1  internal
    ├── BadRequest                       400  exit 2  bad_request
    │   ├── InvalidStateName             400          invalid_state_name
    │   ├── InvalidState                 400          invalid_state
    │   ├── InvalidLockInfo              400          invalid_lock_info
    │   ├── ChecksumMismatch             400          checksum_mismatch
    │   └── SearchTooCostly              400          search_too_costly (over search_time_limit)
    ├── NotFound                         404  exit 1  not_found
    │   ├── StateNotFound                404          state_not_found
    │   ├── VersionNotFound              404          version_not_found
    │   └── LockNotFound                 409          lock_not_found
    ├── Conflict                         409  exit 1  conflict
    │   ├── LockConflict                 423  exit 3  locked      (carries the holder)
    │   ├── LockMismatch                 409  exit 3  lock_mismatch (carries the holder)
    │   ├── StateConflict                409          state_conflict (serial/lineage guard)
    │   └── WriteRace                    409          write_race (the state changed under a write)
    ├── EncryptedState                   422  exit 1  state_encrypted (cannot diff or rewrite)
    ├── UnreadableState                  422  exit 1  state_unreadable (stored bytes, no state)
    ├── PayloadTooLarge                  413          payload_too_large
    ├── Unauthenticated                  401          unauthenticated
    ├── Forbidden                        403          forbidden
    ├── RateLimited                      429          rate_limited (carries retry_after)
    ├── ConfigError                      500  exit 2  config
    │   ├── MissingDependency            500  exit 2  missing_dependency
    │   └── StoreNotFound                500  exit 2  store_not_found (a command that only reads)
    └── StorageError                     503  exit 1  storage_unavailable
        ├── StorageFull                  507          storage_full (the disk is full)
        ├── AccessDenied                 502          storage_access_denied
        └── CapabilityMissing            501          not_supported
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from statekeeper.terraform.lockinfo import LockInfo

__all__ = [
    "AccessDenied",
    "BadRequest",
    "CapabilityMissing",
    "ChecksumMismatch",
    "ConfigError",
    "Conflict",
    "EncryptedState",
    "Forbidden",
    "InvalidLockInfo",
    "InvalidState",
    "InvalidStateName",
    "LockConflict",
    "LockMismatch",
    "LockNotFound",
    "MissingDependency",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "SearchTooCostly",
    "StateConflict",
    "StateNotFound",
    "StatekeeperError",
    "StorageError",
    "StorageFull",
    "StoreNotFound",
    "Unauthenticated",
    "UnreadableState",
    "VersionNotFound",
    "WriteRace",
]


class StatekeeperError(Exception):
    """Base of every error statekeeper raises on purpose."""

    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, object]:
        """The body of an error response: ``{"error": code, "message": ...}``."""
        return {"error": self.code, "message": self.message}


class BadRequest(StatekeeperError):
    """The request or the input is malformed; nothing was changed."""

    status = 400
    exit_code = 2
    code = "bad_request"


class InvalidStateName(BadRequest):
    code = "invalid_state_name"


class InvalidState(BadRequest):
    """The bytes are not a Terraform state nor an OpenTofu encrypted envelope."""

    code = "invalid_state"


class InvalidLockInfo(BadRequest):
    code = "invalid_lock_info"


class ChecksumMismatch(BadRequest):
    """Content-MD5 (or a sha256 we were given) does not match the body."""

    code = "checksum_mismatch"


class SearchTooCostly(BadRequest):
    """A search ran past its time limit over the index and was stopped. The words are
    the caller's to narrow (the same search would be stopped again), so a 400 and not
    a 5xx that a client would retry, as Datasette answers a query over its time limit."""

    code = "search_too_costly"


class NotFound(StatekeeperError):
    status = 404
    code = "not_found"


class StateNotFound(NotFound):
    code = "state_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class LockNotFound(NotFound):
    """An unlock named a lock that is not held.

    Terraform's http client treats anything but 200 on UNLOCK as an error; the
    upstream test server answers 409 when nothing is locked, and so do we.
    """

    status = 409
    code = "lock_not_found"


class Conflict(StatekeeperError):
    status = 409
    code = "conflict"


class LockConflict(Conflict):
    """The lock is held by someone else. ``holder`` is what Terraform prints."""

    status = 423
    exit_code = 3
    code = "locked"

    def __init__(self, holder: LockInfo, message: str | None = None) -> None:
        super().__init__(message or f"state is locked by {holder.describe()}")
        self.holder = holder

    def to_json(self) -> dict[str, object]:
        body = super().to_json()
        body["lock"] = holder_json(self.holder)
        return body


class LockMismatch(Conflict):
    """A lock ID was given that is not the holder's (unlock, or a write's ?ID=)."""

    exit_code = 3
    code = "lock_mismatch"

    def __init__(self, holder: LockInfo, given: str | None) -> None:
        mismatch = (
            f"lock ID {given!r} does not match the lock held by {holder.describe()}"
            if given
            else f"no lock ID was given for the lock held by {holder.describe()}"
        )
        super().__init__(
            f"{mismatch}; only the holder may write or unlock (an admin may force-unlock)"
        )
        self.holder = holder
        self.given = given

    def to_json(self) -> dict[str, object]:
        body = super().to_json()
        body["lock"] = holder_json(self.holder)
        return body


class StateConflict(Conflict):
    """The serial/lineage guard refused a write (Terraform's own wording)."""

    code = "state_conflict"


class EncryptedState(StatekeeperError):
    """An OpenTofu encrypted state: its content cannot be read without the key."""

    status = 422
    code = "state_encrypted"


class UnreadableState(StatekeeperError):
    """A stored version is not a state (an object written by hand): the data is at
    fault, not the request, so not a BadRequest."""

    status = 422
    code = "state_unreadable"


class WriteRace(Conflict):
    """Another write landed between this write's checks and its put (compare-and-swap)."""

    code = "write_race"


class PayloadTooLarge(StatekeeperError):
    status = 413
    exit_code = 2
    code = "payload_too_large"


class Unauthenticated(StatekeeperError):
    status = 401
    code = "unauthenticated"


class Forbidden(StatekeeperError):
    status = 403
    code = "forbidden"


class RateLimited(StatekeeperError):
    """The caller sent more requests than its rate allows; retry after ``retry_after`` s."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(StatekeeperError):
    """Settings, URLs or the environment are wrong; the process cannot start."""

    exit_code = 2
    code = "config"


class MissingDependency(ConfigError):
    """A driver needs an optional extra that is not installed."""

    code = "missing_dependency"


class StoreNotFound(ConfigError):
    """A store URL names a database file that does not exist, opened by a command
    that only reads (only a write makes a new store)."""

    code = "store_not_found"


class StorageError(StatekeeperError):
    """The backing store failed. 503 so that Terraform retries (it retries 5xx)."""

    status = 503
    code = "storage_unavailable"


class StorageFull(StorageError):
    """The disk under the store is full (or the process's file size limit is reached):
    the change was not stored. 507 Insufficient Storage, which Terraform prints as
    ``HTTP error: 507``, is the one status that says so."""

    status = 507
    code = "storage_full"


class AccessDenied(StorageError):
    status = 502
    code = "storage_access_denied"


class CapabilityMissing(StorageError):
    """The store cannot do this (e.g. history on a bucket without versioning)."""

    status = 501
    code = "not_supported"


def holder_json(holder: LockInfo) -> dict[str, object]:
    """The holder's lock as a JSON object, for error bodies that are not Terraform's."""
    import json

    parsed: dict[str, object] = json.loads(holder.body)
    return parsed
