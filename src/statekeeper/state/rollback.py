"""Rollback and push: operator writes, each under the state's lock.

A rollback writes an old version's bytes as a *new* version with serial =
current + 1 and the lineage kept, so that every Terraform client sees a newer
state (Terraform never reads a lower serial as newer) and the next plan shows
the drift the rollback created. Only the top-level ``"serial"`` number changes:
every other byte is the old version's, verbatim. The write goes through
:meth:`StateService.write`, which keeps the DynamoDB digest in step, so
Terraform's own ``backend "s3"`` reads the result without a checksum error.

Each is one event (``rollback``, ``push``): the lock, reads and write it is
made of are folded into it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from statekeeper.errors import BadRequest, EncryptedState, InvalidState, StateConflict
from statekeeper.events import Action
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, require
from statekeeper.state import views
from statekeeper.state.inspection import Inspector
from statekeeper.state.locks import LockService
from statekeeper.state.service import StateService, WriteOutcome
from statekeeper.state.version import StateVersion
from statekeeper.terraform.names import StateName
from statekeeper.terraform.statedoc import StateDoc

__all__ = [
    "PushResult",
    "RollbackResult",
    "already_current",
    "other_lineage",
    "push",
    "rewrite_serial",
    "rollback",
]

#: Operation names in the LockInfo, as ``terraform state push`` writes its own.
PUSH_OPERATION = "state-push"
ROLLBACK_OPERATION = "rollback"

_SERIAL = re.compile(rb'"serial"(\s*):(\s*)(\d+)')


def rewrite_serial(data: bytes, serial: int) -> bytes:
    """``data`` with its top-level serial set to ``serial`` and no other byte changed.

    Each ``"serial": N`` occurrence is tried in order and the first whose
    replacement parses as the same document with only the top-level serial
    changed wins (a nested attribute named ``serial`` never does).
    """
    original = json.loads(data)
    if not isinstance(original, dict) or "serial" not in original:
        raise InvalidState("the state has no top-level serial to rewrite")
    expected = {**original, "serial": serial}
    for m in _SERIAL.finditer(data):
        candidate = (
            data[: m.start()]
            + b'"serial"'
            + m.group(1)
            + b":"
            + m.group(2)
            + str(serial).encode()
            + data[m.end() :]
        )
        try:
            if json.loads(candidate) == expected:
                return candidate
        except ValueError:
            continue
    raise InvalidState("the state's top-level serial could not be located to rewrite it")


@dataclass(frozen=True)
class RollbackResult:
    name: str
    restored: StateVersion
    previous: StateVersion
    written: StateVersion

    def view(self) -> views.RollbackResult:
        return views.RollbackResult(
            name=self.name,
            restored_version=self.restored.version_id,
            restored_serial=self.restored.serial,
            previous_version=self.previous.version_id,
            previous_serial=self.previous.serial,
            version=views.VersionView.of(self.written),
        )


def already_current(name: StateName, version_id: str) -> BadRequest:
    """The refusal of a rollback to the current version: it would only bump the serial."""
    return BadRequest(
        f"version {version_id} is already the current version of {name}: nothing to roll "
        f"back; name an older one (an ID or serial:N from 'statekeeper history {name}')"
    )


def other_lineage(name: StateName, version_id: str, lineage: str, current: str) -> StateConflict:
    """The refusal of a rollback to a version of another lineage than the current state's.

    The serial/lineage guard refuses that write anyway, in the words of a push; this
    says what happened and how to restore such a version all the same.
    """
    return StateConflict(
        f'version {version_id} of {name} has lineage "{lineage}", the current state '
        f'"{current}" (the state was replaced since, e.g. by a forced push): a rollback '
        "keeps the current lineage and cannot restore it. To make that version current "
        f"anyway: statekeeper pull {name} --version {version_id} -o FILE, then "
        f"statekeeper push --force {name} FILE"
    )


def rollback(
    states: StateService,
    locks: LockService,
    inspector: Inspector,
    name: StateName,
    to_ref: str,
    caller: Caller,
) -> RollbackResult:
    """Make version ``to_ref``'s content current again, as a new version, under the lock."""
    with states.events.event(Action.ROLLBACK, caller, name) as event:
        require(states.policy, caller, name, Permission.ADMIN, "roll back")
        with locks.holding(name, ROLLBACK_OPERATION, caller) as lock:
            event.lock(lock)
            target = inspector.resolve(name, caller, to_ref)
            current = states.read_existing(name, caller)
            if target.version_id == current.version.version_id:
                raise already_current(name, target.version_id)
            old = states.read_existing(name, caller, target.version_id).data
            target = inspector.filled(target, old)
            old_doc, cur_doc = StateDoc.parse(old), StateDoc.parse(current.data)
            if old_doc.encrypted or cur_doc.encrypted:
                raise EncryptedState(
                    f"{name} is encrypted by OpenTofu: its serial is also sealed inside the "
                    "ciphertext, so it cannot be rewritten without the key. Pull the old "
                    "version (statekeeper pull --version), and push it with 'tofu state push'."
                )
            if old_doc.lineage and cur_doc.lineage and old_doc.lineage != cur_doc.lineage:
                raise other_lineage(name, target.version_id, old_doc.lineage, cur_doc.lineage)
            new_serial = cur_doc.serial + 1
            # rewrite_serial verifies by parsing that only the top-level serial moved.
            data = rewrite_serial(old, new_serial)
            outcome = states.write(
                name, data, caller, lock_id=lock.id, restored_from=target.version_id
            )
        event.version, event.serial = outcome.version.version_id, outcome.version.serial
        event.detail = (
            f"restored version {target.version_id} (serial {target.serial}) over "
            f"{current.version.version_id} (serial {current.version.serial})"
        )
    return RollbackResult(str(name), target, current.version, outcome.version)


@dataclass(frozen=True)
class PushResult:
    name: str
    outcome: WriteOutcome
    #: Why a state this push replaced is gone for good (a store without history); None:
    #: the store keeps every version.
    history_warning: str | None = None

    def view(self) -> views.PushResult:
        return views.PushResult(
            name=self.name,
            created=self.outcome.created,
            version=views.VersionView.of(self.outcome.version),
            history_warning=self.history_warning,
        )


def push(
    states: StateService,
    locks: LockService,
    name: StateName,
    data: bytes,
    caller: Caller,
    *,
    force: bool = False,
) -> PushResult:
    """Write ``data`` verbatim under the lock (Operation ``state-push``).

    The serial/lineage guard applies as to any write; ``force`` (admin) skips
    it, like ``terraform state push -force``. Unlike Terraform, the bytes are
    stored as given: the serial is not bumped and the lineage not replaced.
    """
    with states.events.event(Action.PUSH, caller, name) as event:
        StateDoc.parse(data)  # refuse what is not a state before taking the lock
        with locks.holding(name, PUSH_OPERATION, caller) as lock:
            event.lock(lock)
            outcome = states.write(name, data, caller, lock_id=lock.id, force=force)
        event.version, event.serial = outcome.version.version_id, outcome.version.serial
        if not outcome.created:
            event.detail = "unchanged (the bytes were already current)"
        elif force:
            event.detail = "forced past the serial/lineage guard"
    # Without history a push replaces the state for good, and its version has no ID
    # (S3 says "null"): the caller is told.
    return PushResult(str(name), outcome, states.store.history_warning if outcome.created else None)
