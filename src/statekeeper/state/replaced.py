"""How many intermediate snapshots each kept version replaced (compaction's record).

A version's own metadata cannot carry the count: S3 object metadata is fixed
once written, and changing it would write a new version. The count is kept
beside the store instead, where its other records live (``RecordSpace``): a
table of the embedded database, or one JSON object per state under
``statekeeper!/history/`` in a bucket.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Protocol
from urllib.parse import quote

from statekeeper.storage.base import ObjectStore, RecordSpace
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.terraform.layout import STATEKEEPER_PREFIX

__all__ = ["ReplacedLedger", "open_ledger"]

HISTORY_PREFIX = STATEKEEPER_PREFIX + "history/"


class ReplacedLedger(Protocol):
    def add(self, key: str, version_id: str, count: int) -> None:
        """Record that ``version_id`` of ``key`` replaced ``count`` more snapshots."""

    def counts(self, key: str) -> dict[str, int]:
        """Version ID → snapshots it replaced, for the versions of ``key`` that did."""


class _SqliteLedger:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.run(
            lambda c: c.execute(
                "CREATE TABLE IF NOT EXISTS history_replaced (key TEXT NOT NULL, "
                "version_id TEXT NOT NULL, replaced INTEGER NOT NULL, "
                "PRIMARY KEY (key, version_id)) WITHOUT ROWID"
            ),
            write=True,
        )

    def add(self, key: str, version_id: str, count: int) -> None:
        def tx(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO history_replaced (key, version_id, replaced) VALUES (?, ?, ?) "
                "ON CONFLICT (key, version_id) DO UPDATE SET replaced = replaced + ?",
                (key, version_id, count, count),
            )

        self.db.run(tx, write=True)

    def counts(self, key: str) -> dict[str, int]:
        rows = self.db.run(
            lambda c: c.execute(
                "SELECT version_id, replaced FROM history_replaced WHERE key = ?", (key,)
            ).fetchall()
        )
        return {str(v): int(n) for v, n in rows}


class _ObjectLedger:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    def _key(self, key: str) -> str:
        return HISTORY_PREFIX + quote(key, safe="") + ".json"

    def add(self, key: str, version_id: str, count: int) -> None:
        counts = self.counts(key)
        counts[version_id] = counts.get(version_id, 0) + count
        # Compaction runs under the state's released lock in one process; a lost
        # update between two servers costs a count, never a state.
        self.objects.put(self._key(key), json.dumps(counts, sort_keys=True).encode(), {})

    def counts(self, key: str) -> dict[str, int]:
        obj = self.objects.get(self._key(key))
        if obj is None:
            return {}
        raw = json.loads(obj.data)
        return {str(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def open_ledger(records: RecordSpace) -> ReplacedLedger:
    if records.database is not None:
        return _SqliteLedger(records.database)
    return _ObjectLedger(records.objects)
