"""Two lock tables at once: Terraform's transition mode (``use_lockfile`` + ``dynamodb_table``).

Terraform takes the S3 lock file first, then the DynamoDB item, and gives the
lock file back when the DynamoDB acquire fails. On unlock it tries both and
says which one failed. A run configured with only one of the two mechanisms
still meets ours, since we hold both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from statekeeper.errors import LockMismatch, LockNotFound, StatekeeperError, StorageError
from statekeeper.storage.base import LockTable
from statekeeper.terraform.lockinfo import LockInfo

__all__ = ["DualLocks"]

_NAMES = {"s3lock": "the S3 lock file", "dynamodb": "the DynamoDB lock"}


def _name(table: LockTable) -> str:
    return _NAMES.get(table.scheme, f"the {table.scheme} lock")


class DualLocks(LockTable):
    def __init__(self, tables: Sequence[LockTable]) -> None:
        if len(tables) < 2:
            raise ValueError("DualLocks needs at least two lock tables")
        # Lock files first, whatever order the URLs came in (Terraform's order).
        self.tables = sorted(tables, key=lambda t: t.scheme != "s3lock")
        self.scheme = "+".join(t.scheme for t in self.tables)
        self.keeps_digests = any(t.keeps_digests for t in self.tables)

    def parts(self) -> list[LockTable]:
        return list(self.tables)

    def acquire(self, key: str, lock: LockInfo) -> None:
        taken: list[LockTable] = []
        try:
            for table in self.tables:
                table.acquire(key, lock)
                taken.append(table)
        except BaseException:
            # Give back what we took; the original failure is what the caller sees.
            for table in reversed(taken):
                try:
                    table.delete_if_held_by(key, lock.id)
                except StatekeeperError:
                    pass
            raise

    def read(self, key: str) -> LockInfo | None:
        for table in self.tables:
            holder = table.read(key)
            if holder is not None:
                return holder
        return None

    def delete_if_held_by(self, key: str, lock_id: str) -> bool:
        deleted = [table.delete_if_held_by(key, lock_id) for table in self.tables]
        return any(deleted)

    def release(self, key: str, lock_id: str, *, read: LockInfo | None = None) -> LockInfo:
        """Release in every table; an error names the table(s) that failed.

        ``read`` (the holder read through this table) is not passed on: each
        table reads its own copy, which may differ in a drift.
        """
        released: list[LockInfo] = []
        failed: list[tuple[LockTable, StatekeeperError]] = []
        for table in self.tables:
            try:
                released.append(table.release(key, lock_id))
            except StatekeeperError as exc:
                failed.append((table, exc))
        if not failed:
            return released[0]
        for _, error in failed:
            if isinstance(error, LockMismatch):
                raise error  # someone else holds it: show the holder
        first = failed[0][1]
        if not released and all(isinstance(e, LockNotFound) for _, e in failed):
            raise first
        which = " and ".join(_name(t) for t, _ in failed)
        details = "; ".join(f"{_name(t)}: {e.message}" for t, e in failed)
        done = " (the other one was released)" if released else ""
        message = f"failed to unlock {which}{done}: {details}"
        if isinstance(first, LockNotFound):
            raise LockNotFound(message) from first
        raise StorageError(message) from first

    def force_release(self, key: str) -> LockInfo | None:
        removed = [table.force_release(key) for table in self.tables]
        return next((r for r in removed if r is not None), None)

    def scan(self, prefix: str = "") -> Iterator[tuple[str, LockInfo]]:
        merged: dict[str, LockInfo] = {}
        for table in reversed(self.tables):  # the lock file's view wins
            merged.update(table.scan(prefix))
        yield from sorted(merged.items(), key=lambda kv: kv[0])

    def _digests(self) -> LockTable | None:
        return next((t for t in self.tables if t.keeps_digests), None)

    def get_digest(self, key: str) -> str | None:
        table = self._digests()
        return None if table is None else table.get_digest(key)

    def put_digest(self, key: str, md5_hex: str) -> None:
        table = self._digests()
        if table is not None:
            table.put_digest(key, md5_hex)

    def delete_digest(self, key: str) -> None:
        table = self._digests()
        if table is not None:
            table.delete_digest(key)

    def probe(self) -> None:
        for table in self.tables:
            table.probe()

    def close(self) -> None:
        for table in self.tables:
            table.close()
