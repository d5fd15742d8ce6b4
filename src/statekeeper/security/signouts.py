"""Ended browser sessions: what makes *Sign out* end a session on the server.

A UI session is a signed cookie that the server checks without a record of
its own (``server/ui/session.py``), so a copy of it would stay valid until it
expires. Sign-out records the session's ID (a digest of its CSRF token, which is
random per session) with the time the cookie expires at the latest; a cookie
whose session is recorded is no session. Once that time has passed the
cookie's signature has expired too, so the entry is dropped.

The entries are kept where the store's other records are (``RecordSpace``): a
table of the embedded database, or one small object per ended session under
``statekeeper!/signouts/`` in a bucket. Only UI requests that carry a
signed-in session look here; Terraform's and the API's requests never do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from typing import Protocol

from statekeeper.errors import StatekeeperError
from statekeeper.storage.base import ObjectStore, RecordSpace
from statekeeper.storage.sqlite.database import SqliteDatabase
from statekeeper.terraform.layout import SIGNOUTS_PREFIX

__all__ = ["SignedOut", "open_signouts", "session_id"]

log = logging.getLogger("statekeeper.signouts")


def session_id(csrf: str) -> str:
    """The ID a session is recorded under: its CSRF token is not kept as such."""
    return hashlib.sha256(csrf.encode()).hexdigest()


class SignedOut(Protocol):
    def end(self, session: str, until: float) -> None:
        """Record that ``session`` ended; its cookie expires by ``until`` (UNIX time)."""

    def ended(self, session: str) -> bool:
        """True when ``session`` was signed out (and its cookie has not expired yet)."""


class _SqliteSignedOut:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        db.run(
            lambda c: c.execute(
                "CREATE TABLE IF NOT EXISTS ui_signouts (session TEXT PRIMARY KEY, "
                "until REAL NOT NULL) WITHOUT ROWID"
            ),
            write=True,
        )

    def end(self, session: str, until: float) -> None:
        def tx(c: sqlite3.Connection) -> None:
            # Sign-outs are rare: each drops the entries whose cookies have expired.
            c.execute("DELETE FROM ui_signouts WHERE until < ?", (time.time(),))
            c.execute(
                "INSERT OR REPLACE INTO ui_signouts (session, until) VALUES (?, ?)",
                (session, until),
            )

        self.db.run(tx, write=True)

    def ended(self, session: str) -> bool:
        row = self.db.read_one(
            lambda c: c.execute(
                "SELECT until FROM ui_signouts WHERE session = ?", (session,)
            ).fetchone()
        )
        return row is not None and float(row[0]) >= time.time()


class _ObjectSignedOut:
    """One object per ended session; ``lifetime`` (the session's, in seconds) tells
    from a listing alone which entries have expired (a listing carries no bodies)."""

    def __init__(self, objects: ObjectStore, lifetime: float) -> None:
        self.objects = objects
        self.lifetime = lifetime

    def end(self, session: str, until: float) -> None:
        self.objects.put(SIGNOUTS_PREFIX + session, json.dumps({"until": until}).encode(), {})
        horizon = time.time() - self.lifetime
        try:
            for info in list(self.objects.scan(SIGNOUTS_PREFIX)):
                # Written before the horizon: its session's cookie has expired by now.
                # Erased, not deleted: on a versioned bucket a delete leaves every version.
                if info.last_modified.timestamp() < horizon:
                    self.objects.erase(info.key)
        except StatekeeperError as exc:
            # The session has ended all the same: only the tidying failed, and the next
            # sign-out tries again (with credentials from an older IAM policy, for ever).
            log.warning(
                "expired sign-outs stay under %s: %s (the IAM policy's ExpireSignOuts "
                "statement allows their removal: statekeeper iam-policy)",
                SIGNOUTS_PREFIX,
                exc.message,
            )

    def ended(self, session: str) -> bool:
        obj = self.objects.get(SIGNOUTS_PREFIX + session)
        if obj is None:
            return False
        try:
            until = float(json.loads(obj.data)["until"])
        except (ValueError, KeyError, TypeError):
            return True  # damaged: the session was ended all the same
        return until >= time.time()


def open_signouts(records: RecordSpace, lifetime: float) -> SignedOut:
    """The ended sessions in ``records``; ``lifetime``: a session's at most, in seconds."""
    if records.database is not None:
        return _SqliteSignedOut(records.database)
    return _ObjectSignedOut(records.objects, lifetime)
