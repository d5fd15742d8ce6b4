"""The server's sweeper: expired locks removed even when nobody asks for them.

A LOCK meeting an expired lock and a listing remove it too (see
:meth:`~statekeeper.state.locks.LockService.expire_due`); the sweeper covers a
state nobody touches, so that Terraform's own backend "s3", reading the bucket
directly, also finds the lock gone within ``sweep`` seconds.
"""

from __future__ import annotations

import logging
import threading

from statekeeper.errors import StatekeeperError
from statekeeper.state.locks import LockService

__all__ = ["LeaseSweeper"]

log = logging.getLogger("statekeeper.leases")


class LeaseSweeper:
    """A daemon thread calling ``expire_due`` every ``lock_policy.sweep`` seconds."""

    def __init__(self, locks: LockService) -> None:
        self.locks = locks
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def needed(self) -> bool:
        policy = self.locks.lock_policy
        return policy.has_leases and policy.sweep > 0

    def start(self) -> None:
        """Start sweeping, where a lease is configured (else nothing runs)."""
        if self.needed and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="statekeeper-leases", daemon=True
            )
            self._thread.start()

    def sweep(self) -> int:
        """One pass; the number of locks removed. A storage error is logged, never raised:
        the next pass tries again."""
        try:
            return len(self.locks.expire_due())
        except StatekeeperError as exc:
            log.warning("the sweep for expired locks failed: %s", exc.message)
            return 0

    def _run(self) -> None:
        while not self._stop.wait(self.locks.lock_policy.sweep):
            self.sweep()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
