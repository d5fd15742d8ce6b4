"""Terraform's ``backend "s3"`` layout: every key and ID derived from a state's object key.

For a state whose object key is ``KEY`` in the bucket (the store's namespace)
``BUCKET``, Terraform's S3 backend uses:

- the lock file ``KEY`` + :data:`LOCK_FILE_SUFFIX` (``use_lockfile``);
- the lock path ``BUCKET/KEY``: the DynamoDB lock item's ``LockID`` and the
  ``Path`` field of the LockInfo it writes;
- the digest item ``LockID`` = lock path + :data:`DIGEST_SUFFIX`, holding the
  hex MD5 of the current state;
- for workspace ``W`` of the backend ``key``: the object key
  ``<workspace_key_prefix>/W/<key>``, the prefix being
  :data:`DEFAULT_WORKSPACE_PREFIX` unless configured.

Shared plan locks (the ``shared-plans`` lock policy) keep every holder beyond
the one in the lock Terraform sees in a *shared hold* beside it: the lock key
``KEY`` + :data:`SHARED_HOLD_MARK` + a digest of the holder's lock ID, and a
marker at ``KEY`` + ``SHARED_HOLD_MARK`` without the slash while any exists
(:func:`shared_hold_key`, :func:`split_shared_hold`). In a DynamoDB table the
hold is the item ``BUCKET/KEY!shared/…``, with lock files the lock file of
``KEY!shared/…``: names Terraform never reads, and never a state's
('!' is not allowed in a state name).

statekeeper keeps its own objects (key ring, audit files) under
:data:`STATEKEEPER_PREFIX` and its doctor's probe objects under
:data:`PROBE_PREFIX`. A state name that one of these rules derives for
another purpose is *reserved*: :func:`reserved_reason` says which rule, and
state names refuse it on every store, so that a write can never land on
another state's lock file or digest and migration between stores never meets
a name one side cannot hold.
"""

from __future__ import annotations

import hashlib

__all__ = [
    "AUDIT_PREFIX",
    "DEFAULT_WORKSPACE_PREFIX",
    "DIGEST_SUFFIX",
    "LOCK_FIELDS",
    "LOCK_FILE_SUFFIX",
    "PROBE_PREFIX",
    "RESERVED_PREFIXES",
    "RESERVED_SUFFIXES",
    "SHARED_HOLD_MARK",
    "SIGNOUTS_PREFIX",
    "STATEKEEPER_PREFIX",
    "WEBHOOKS_PREFIX",
    "digest_id",
    "is_digest_id",
    "is_lock_file",
    "lock_file_key",
    "lock_path",
    "reserved_reason",
    "shared_hold_key",
    "shared_holds_marker",
    "split_shared_hold",
    "state_of_digest_id",
    "state_of_lock_file",
]

#: The suffix of the S3-native lock object beside a state.
LOCK_FILE_SUFFIX = ".tflock"
#: The suffix of the DynamoDB digest item's LockID after the lock path.
DIGEST_SUFFIX = "-md5"
#: ``workspace_key_prefix`` when the backend block does not set it.
DEFAULT_WORKSPACE_PREFIX = "env:"
#: LockInfo's fields in the order Terraform marshals them.
LOCK_FIELDS = ("ID", "Operation", "Info", "Who", "Version", "Created", "Path")
#: statekeeper's own objects in a store ('!' is not allowed in a state name).
STATEKEEPER_PREFIX = "statekeeper!/"
#: Between a state's lock key and the digest of a shared holder's lock ID.
SHARED_HOLD_MARK = "!shared/"
#: Objects ``statekeeper doctor`` writes and removes to probe permissions.
PROBE_PREFIX = ".statekeeper-doctor/"
#: The webhooks of a store without a database: subscriptions, outbox, delivery log.
WEBHOOKS_PREFIX = STATEKEEPER_PREFIX + "hooks/"
#: The web UI's ended sessions in a store without a database (security/signouts.py).
SIGNOUTS_PREFIX = STATEKEEPER_PREFIX + "signouts/"
#: The audit trail of a store without a database: an object per batch of events.
AUDIT_PREFIX = STATEKEEPER_PREFIX + "audit/"
#: The ends of the names :func:`reserved_reason` refuses: a lock file, a digest item.
RESERVED_SUFFIXES = (LOCK_FILE_SUFFIX, DIGEST_SUFFIX)
#: The starts of the names :func:`reserved_reason` refuses, with whose objects they hold.
RESERVED_PREFIXES = {
    STATEKEEPER_PREFIX: "statekeeper's own objects (key ring, audit trail, webhooks)",
    PROBE_PREFIX: "the objects 'statekeeper doctor' writes to probe permissions",
}


def lock_path(namespace: str, key: str) -> str:
    """``BUCKET/KEY``: the DynamoDB lock ``LockID`` and LockInfo ``Path`` of a state."""
    return f"{namespace}/{key}"


def digest_id(namespace: str, key: str) -> str:
    """The DynamoDB ``LockID`` of a state's digest item."""
    return lock_path(namespace, key) + DIGEST_SUFFIX


def is_digest_id(lock_id: str) -> bool:
    return lock_id.endswith(DIGEST_SUFFIX)


def state_of_digest_id(lock_id: str) -> str:
    """The lock path a digest ``LockID`` belongs to."""
    return lock_id[: -len(DIGEST_SUFFIX)]


def lock_file_key(key: str) -> str:
    """The object key of the lock file of the state at ``key``."""
    return key + LOCK_FILE_SUFFIX


def is_lock_file(key: str) -> bool:
    return key.endswith(LOCK_FILE_SUFFIX)


def state_of_lock_file(key: str) -> str:
    """The state key a lock file's key belongs to."""
    return key[: -len(LOCK_FILE_SUFFIX)]


def shared_hold_key(key: str, lock_id: str) -> str:
    """The lock key of the shared hold ``lock_id`` on the state at ``key``.

    A digest of the ID, not the ID: a client's ID may be any text of any length,
    and this becomes an S3 object key or a DynamoDB LockID.
    """
    digest = hashlib.sha256(lock_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{key}{SHARED_HOLD_MARK}{digest}"


def shared_holds_marker(key: str) -> str:
    """The lock key present while shared holds of ``key`` may exist (read before listing)."""
    return key + SHARED_HOLD_MARK.rstrip("/")


def split_shared_hold(key: str) -> tuple[str, bool] | None:
    """``(state key, is_marker)`` for a shared hold's or a marker's lock key; None for
    a state's own lock key."""
    state, sep, _ = key.partition(SHARED_HOLD_MARK)
    if sep:
        return state, False
    marker = SHARED_HOLD_MARK.rstrip("/")
    if key.endswith(marker):
        return key[: -len(marker)], True
    return None


def reserved_reason(name: str) -> str | None:
    """Why ``name`` cannot be a state's name, or None when it can.

    The rules hold on every store, the embedded one included, so a name valid
    on one store is valid on all of them.
    """
    if is_lock_file(name):
        return (
            f"names ending in {LOCK_FILE_SUFFIX!r} are reserved: on S3 that object is the "
            f"lock file of the state {state_of_lock_file(name)!r}"
        )
    if is_digest_id(name):
        return (
            f"names ending in {DIGEST_SUFFIX!r} are reserved: in a DynamoDB lock table that "
            f"LockID is the digest item of the state {state_of_digest_id(name)!r}"
        )
    for prefix, owner in RESERVED_PREFIXES.items():
        if name.startswith(prefix):
            return f"names under {prefix!r} are reserved for {owner}"
    return None
