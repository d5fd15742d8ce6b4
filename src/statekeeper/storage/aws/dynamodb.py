"""``dynamodb://TABLE``: state locks and digests in Terraform's DynamoDB layout.

For a state whose object is ``KEY`` in bucket ``BUCKET``:

- the lock is the item ``LockID = "BUCKET/KEY"`` whose ``Info`` is the
  LockInfo JSON as the client sent it, with ``Path`` set to ``BUCKET/KEY`` as
  Terraform's backend writes it (what Terraform prints for a held lock). The
  server's own facts go in ``Actor``, ``RemoteAddr`` and ``Acquired``, which
  Terraform never reads, and ``Shared`` while plans share the lock
  (:mod:`statekeeper.state.holds`): a lock so marked is never released without
  reading which holds are beside it;
- the digest is the item whose ``LockID`` is the lock path plus ``DIGEST_SUFFIX``
  (see :mod:`statekeeper.terraform.layout`) with ``Digest`` = hex MD5 of the
  current state, which Terraform's S3 backend checks on every read.

The table needs only a string partition key ``LockID``. Options: ``region``,
``profile``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any, NoReturn

from statekeeper.errors import (
    ConfigError,
    InvalidLockInfo,
    LockConflict,
    LockMismatch,
    LockNotFound,
    StatekeeperError,
    StorageError,
)
from statekeeper.storage.aws import _boto
from statekeeper.storage.base import LockTable, ObjectStore
from statekeeper.storage.registry import DriverURL
from statekeeper.terraform.layout import digest_id, is_digest_id, lock_path
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.times import format_rfc3339, parse_rfc3339, utcnow

__all__ = ["LOCK_TABLE_KEY", "DynamoLocks", "describe_key", "key_of", "lock_of_item", "open_locks"]

_CONDITION_FAILED = "ConditionalCheckFailedException"
#: The attribute on a lock item beside which shared holds are recorded.
_SHARED = "Shared"
#: The key of Terraform's lock table: the hash key LockID, a string; no range key.
LOCK_TABLE_KEY = (("LockID", "HASH", "S"),)
_KINDS = {"HASH": "hash key", "RANGE": "range key"}
_TYPES = {"S": "string", "N": "number", "B": "binary"}


def key_of(table: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The key of a DescribeTable ``Table``: (attribute, HASH or RANGE, S, N or B) each."""
    types = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    return tuple(
        (k["AttributeName"], k["KeyType"], types.get(k["AttributeName"], ""))
        for k in table["KeySchema"]
    )


def describe_key(key: tuple[tuple[str, str, str], ...]) -> str:
    """``hash key LockID (string)``, with the range key after a comma when there is one."""
    return ", ".join(
        f"{_KINDS.get(kind, kind)} {name} ({_TYPES.get(typ, typ or 'type unknown')})"
        for name, kind, typ in key
    )


def lock_of_item(item: dict[str, Any], table: str, *, damaged_ok: bool = False) -> LockInfo:
    """The lock in a lock item of ``table``, with the server's facts (``Acquired``: the
    lock's age by the server's clock); a damaged one is a StorageError, or with
    ``damaged_ok`` (listings, doctor) an unreadable lock that names what is wrong."""
    lock_id = item["LockID"].get("S", "")
    info = item.get("Info", {}).get("S")
    try:
        if info is None:
            raise InvalidLockInfo("it has no Info string")
        lock = LockInfo.parse(info.encode("utf-8"))
    except StatekeeperError as exc:
        damage = (
            f"the lock item {lock_id!r} in the DynamoDB table {table!r} is not a Terraform "
            f"lock ({exc.message}); once no Terraform run holds the state, remove it with "
            "'statekeeper unlock NAME --force' or delete the item"
        )
        if damaged_ok:
            raw = json.dumps(item, default=str).encode()
            return LockInfo.unreadable(raw, damage)
        raise StorageError(damage) from exc
    acquired = None
    if "Acquired" in item:
        try:
            acquired = parse_rfc3339(item["Acquired"]["S"])
        except ValueError:
            acquired = None
    return replace(
        lock,
        actor=item.get("Actor", {}).get("S"),
        remote_addr=item.get("RemoteAddr", {}).get("S"),
        acquired=acquired,
    )


class DynamoLocks(LockTable):
    scheme = "dynamodb"
    keeps_digests = True
    releases_exactly = True

    def __init__(
        self,
        table: str,
        store: ObjectStore,
        *,
        region: str | None = None,
        profile: str | None = None,
        correct: str = "",
    ) -> None:
        self.table = table
        self.store = store
        #: The advice to correct the URL that named the table (``DriverURL.correct``).
        self.correct = correct
        self.client: Any = _boto.client("dynamodb", region=region, profile=profile)
        # Fail at start-up, not at the first LOCK, when the table is missing, out of
        # reach or keyed otherwise. GetItem is in Terraform's minimal policy;
        # DescribeTable is not.
        try:
            self.client.get_item(TableName=self.table, Key=self._key("."))
        except _boto.AWS_ERRORS as exc:
            # A GetItem by LockID is refused as invalid only when the key is not LockID.
            if _boto.error_code(exc) == "ValidationException":
                raise ConfigError(self._not_a_lock_table()) from exc
            self._translate(exc, "dynamodb:GetItem")

    # Names

    def lock_id(self, key: str) -> str:
        """``BUCKET/KEY``: the LockID Terraform's S3 backend uses for this state."""
        return lock_path(self.store.lock_namespace, self.store.full_key(key))

    def _digest_id(self, key: str) -> str:
        return digest_id(self.store.lock_namespace, self.store.full_key(key))

    def _key(self, lock_id: str) -> dict[str, Any]:
        return {"LockID": {"S": lock_id}}

    def _name_of(self, lock_id: str) -> str | None:
        """The state name of a LockID, or None when it belongs to another bucket or prefix."""
        head = self.store.lock_namespace + "/"
        if not lock_id.startswith(head):
            return None
        full = lock_id[len(head) :]
        store_prefix = self.store.full_key("")
        if not full.startswith(store_prefix):
            return None
        return full[len(store_prefix) :] or None

    def _resource(self) -> str:
        return f"the DynamoDB table {self.table!r}"

    def _translate(self, exc: Exception, action: str) -> NoReturn:
        """The AWS error as statekeeper's; a missing table names the region it was looked
        up in, since a table in another region is the usual cause."""
        if _boto.error_code(exc) == "ResourceNotFoundException":
            region = self.client.meta.region_name
            raise StorageError(
                f"{self._resource()} does not exist in {region} ({action} failed with "
                "ResourceNotFoundException); create it there first (see `statekeeper "
                "bootstrap`), or give the table's region: dynamodb://"
                f"{self.table}?region=REGION" + (f", or {self.correct}" if self.correct else "")
            ) from exc
        _boto.translate(exc, action, self._resource(), self.correct)

    def _call(self, action: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(TableName=self.table, **kwargs)
        except _boto.AWS_ERRORS as exc:
            self._translate(exc, action)

    def _not_a_lock_table(self) -> str:
        """Why the table cannot hold Terraform's locks: its key, and what to do."""
        try:
            table = self.client.describe_table(TableName=self.table)["Table"]
            keys = f"its key is {describe_key(key_of(table))}"
        except _boto.AWS_ERRORS as exc:
            denied = _boto.error_code(exc) or type(exc).__name__
            keys = f"its key could not be read (dynamodb:DescribeTable failed with {denied})"
        return (
            f"{self._resource()} is not a Terraform lock table: {keys}. Terraform's lock "
            f"table has {describe_key(LOCK_TABLE_KEY)} and no range key, and a table's key "
            "cannot change: make one with `statekeeper bootstrap --bucket BUCKET --table "
            f"NEW_TABLE`, then {self.correct or 'use it'}{' to name it' if self.correct else ''}"
        )

    # Locks

    def _info(self, key: str, lock: LockInfo) -> str:
        """The ``Info`` this table writes for ``lock``: the same each time it is made."""
        return lock.body_with_path(self.lock_id(key)).decode("utf-8")

    def _item(self, key: str, lock: LockInfo) -> dict[str, Any]:
        item: dict[str, Any] = {
            "LockID": {"S": self.lock_id(key)},
            "Info": {"S": self._info(key, lock)},
            "Acquired": {"S": format_rfc3339(lock.acquired or utcnow())},
        }
        if lock.actor:
            item["Actor"] = {"S": lock.actor}
        if lock.remote_addr:
            item["RemoteAddr"] = {"S": lock.remote_addr}
        return item

    def _lock_of(self, item: dict[str, Any], *, damaged_ok: bool = False) -> LockInfo:
        return lock_of_item(item, self.table, damaged_ok=damaged_ok)

    def acquire(self, key: str, lock: LockInfo) -> None:
        # A holder that vanishes between our failed put and our read leaves the
        # lock free: try again rather than report a conflict with nobody.
        for _ in range(5):
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item=self._item(key, lock),
                    ConditionExpression="attribute_not_exists(LockID)",
                )
                return
            except _boto.AWS_ERRORS as exc:
                if _boto.error_code(exc) != _CONDITION_FAILED:
                    self._translate(exc, "dynamodb:PutItem")
            holder = self.read(key)
            if holder is not None:
                raise LockConflict(holder)
        raise StorageError(
            f"the lock on {key!r} kept changing hands in {self._resource()}; try again"
        )

    def _get(self, lock_id: str) -> dict[str, Any] | None:
        resp = self._call(
            "dynamodb:GetItem",
            self.client.get_item,
            Key=self._key(lock_id),
            ConsistentRead=True,
        )
        item: dict[str, Any] | None = resp.get("Item")
        return item

    def read(self, key: str) -> LockInfo | None:
        item = self._get(self.lock_id(key))
        return None if item is None else self._lock_of(item)

    def release(self, key: str, lock_id: str, *, read: LockInfo | None = None) -> LockInfo:
        """The base class's release with one read at most: the delete is conditioned
        on the ``Info`` read (by the caller, or here), which is the lock's body."""
        if read is not None and read.damaged is None:
            item: dict[str, Any] = {"Info": {"S": read.body.decode("utf-8")}}
            holder = read
        else:
            found = self._get(self.lock_id(key))
            if found is None:
                raise LockNotFound(f"no lock is held on {key!r}; nothing to unlock")
            item, holder = found, self._lock_of(found)
        if holder.id != lock_id:
            raise LockMismatch(holder, lock_id)
        if not self._delete_read(key, item):
            # Released or replaced between the read and the delete.
            now = self.read(key)
            if now is None:
                raise LockNotFound(f"no lock is held on {key!r}; nothing to unlock")
            raise LockMismatch(now, lock_id)
        return holder

    def release_exactly(self, key: str, lock: LockInfo) -> bool:
        """One request: a DeleteItem conditioned on the lock's ``Info`` and ``Actor``
        (the body as this table wrote it and the identity that took it) and on the
        absence of the ``Shared`` mark."""
        if lock.damaged is not None:
            return False
        values = {":info": {"S": self._info(key, lock)}}
        if lock.actor:
            taker = "#actor = :actor"
            values[":actor"] = {"S": lock.actor}
        else:
            taker = "attribute_not_exists(#actor)"  # Terraform's own item names no taker
        condition = f"#info = :info AND {taker} AND attribute_not_exists(#shared)"
        return self._delete_exactly(
            {
                "TableName": self.table,
                "Key": self._key(self.lock_id(key)),
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {
                    "#info": "Info",
                    "#actor": "Actor",
                    "#shared": _SHARED,
                },
                "ExpressionAttributeValues": values,
            }
        )

    def mark_shared(self, key: str) -> bool:
        """Add ``Shared`` to the lock item as it is (a conditional PutItem of the item
        read, so nothing else in it changes; Terraform reads only ``Info``)."""
        lock_id = self.lock_id(key)
        for _ in range(5):
            item = self._get(lock_id)
            if item is None:
                return False
            if _SHARED in item or "Info" not in item:
                return True  # marked already; a damaged item is never released exactly
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item={**item, _SHARED: {"BOOL": True}},
                    ConditionExpression="#info = :info",
                    ExpressionAttributeNames={"#info": "Info"},
                    ExpressionAttributeValues={":info": item["Info"]},
                )
                return True
            except _boto.AWS_ERRORS as exc:
                if _boto.error_code(exc) != _CONDITION_FAILED:
                    self._translate(exc, "dynamodb:PutItem")
            # Replaced between the read and the put: mark the lock held now.
        raise StorageError(
            f"the lock on {key!r} kept changing hands in {self._resource()}; try again"
        )

    def _delete_exactly(self, delete: dict[str, Any]) -> bool:
        try:
            self.client.delete_item(**delete)
        except _boto.AWS_ERRORS as exc:
            if _boto.error_code(exc) == _CONDITION_FAILED:
                return False
            self._translate(exc, "dynamodb:DeleteItem")
        return True

    def delete_if_held_by(self, key: str, lock_id: str) -> bool:
        item = self._get(self.lock_id(key))
        if item is None or self._lock_of(item).id != lock_id:
            return False
        return self._delete_read(key, item)

    def force_release(self, key: str) -> LockInfo | None:
        """Remove whatever lock item is there, a damaged one included (it has no ID)."""
        item = self._get(self.lock_id(key))
        if item is None:
            return None
        lock = self._lock_of(item, damaged_ok=True)
        if lock.damaged is None:
            return super().force_release(key)
        return lock if self._delete_read(key, item) else self.force_release(key)

    def _delete_read(self, key: str, item: dict[str, Any]) -> bool:
        """Delete the lock item if it still holds the ``Info`` read in ``item``.

        Conditioned on that Info (as OpenTofu does), so a lock taken by someone
        else in between is never deleted. Items written by Terraform carry only
        Info, so the ID cannot be a separate attribute.
        """
        if "Info" in item:
            condition: dict[str, Any] = {
                "ConditionExpression": "#info = :info",
                "ExpressionAttributeValues": {":info": item["Info"]},
            }
        else:
            condition = {"ConditionExpression": "attribute_not_exists(#info)"}
        try:
            self.client.delete_item(
                TableName=self.table,
                Key=self._key(self.lock_id(key)),
                ExpressionAttributeNames={"#info": "Info"},
                **condition,
            )
        except _boto.AWS_ERRORS as exc:
            if _boto.error_code(exc) == _CONDITION_FAILED:
                return False
            self._translate(exc, "dynamodb:DeleteItem")
        return True

    def scan(self, prefix: str = "") -> Iterator[tuple[str, LockInfo]]:
        begins = self.lock_id(prefix)
        paginator = self.client.get_paginator("scan")
        found: list[tuple[str, LockInfo]] = []
        try:
            for page in paginator.paginate(
                TableName=self.table,
                FilterExpression="begins_with(LockID, :p)",
                ExpressionAttributeValues={":p": {"S": begins}},
                ConsistentRead=True,
            ):
                for item in page.get("Items", []):
                    lock_id = item["LockID"]["S"]
                    if is_digest_id(lock_id):
                        continue  # a digest item (its Digest is checked elsewhere)
                    name = self._name_of(lock_id)
                    if name is not None and name.startswith(prefix):
                        found.append((name, self._lock_of(item, damaged_ok=True)))
        except _boto.AWS_ERRORS as exc:
            self._translate(exc, "dynamodb:Scan")
        yield from sorted(found, key=lambda kv: kv[0])

    def probe(self) -> None:
        """DescribeTable; where the policy does not grant it (Terraform's minimal policy
        does not), the GetItem the start-up check makes."""
        try:
            resp = self.client.describe_table(TableName=self.table)
        except _boto.AWS_ERRORS as exc:
            if not _boto.denied(exc):
                self._translate(exc, "dynamodb:DescribeTable")
            self._call("dynamodb:GetItem", self.client.get_item, Key=self._key("."))
            return
        status = resp.get("Table", {}).get("TableStatus", "ACTIVE")
        if status in ("CREATING", "DELETING", "INACCESSIBLE_ENCRYPTION_CREDENTIALS"):
            raise StorageError(f"{self._resource()} is {status}, not ready for locks")

    # Digests

    def get_digest(self, key: str) -> str | None:
        item = self._get(self._digest_id(key))
        if item is None or "Digest" not in item:
            return None
        digest: str = item["Digest"]["S"]
        return digest

    def put_digest(self, key: str, md5_hex: str) -> None:
        self._call(
            "dynamodb:PutItem",
            self.client.put_item,
            Item={"LockID": {"S": self._digest_id(key)}, "Digest": {"S": md5_hex}},
        )

    def delete_digest(self, key: str) -> None:
        self._call(
            "dynamodb:DeleteItem",
            self.client.delete_item,
            Key=self._key(self._digest_id(key)),
        )


def open_locks(url: DriverURL, store: ObjectStore, *, create: bool = True) -> DynamoLocks:
    # ``create``: a table is never made by opening it (a missing one fails at first use).
    url.reject_unknown_options({"region", "profile"})
    if not url.netloc:
        raise ConfigError(f"{url.raw!r} names no table; use dynamodb://TABLE?region=…")
    if url.path.strip("/"):
        raise ConfigError(f"{url.raw!r}: a DynamoDB table name has no '/'; use dynamodb://TABLE")
    return DynamoLocks(
        url.netloc,
        store,
        region=_boto.url_region(url, "dynamodb"),
        profile=url.options.get("profile") or None,
        correct=url.correct(),
    )
