"""No path can skip the audit trail: every operation done for a caller emits exactly one event.

The operations are found by introspection, not listed by hand: every public
function and every public method of a public class in ``statekeeper`` that
takes a :class:`~statekeeper.security.caller.Caller`. Each one is either in
``READ_ONLY`` (reviewed: it changes nothing) or has a scenario below that calls
it once and must see exactly one event, with the expected action, both when it
succeeds and when the caller lacks the grant. A new operation fails
:func:`test_every_operation_is_classified` until it is given a scenario, and
the scenario fails until the operation emits.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import pytest

import statekeeper
from statekeeper.app import Services
from statekeeper.awssetup.bootstrap import bootstrap
from statekeeper.awssetup.context import Aws, Target
from statekeeper.awssetup.doctor import doctor
from statekeeper.errors import Forbidden
from statekeeper.events import Action, Event
from statekeeper.security.audit import AuditFilter
from statekeeper.security.caller import Caller
from statekeeper.settings import Settings
from statekeeper.state import migrate, reap, rollback
from statekeeper.state.compaction import Compactor
from statekeeper.state.hygiene import parse_history
from statekeeper.state.operator import Operator
from statekeeper.state.prune import prune
from statekeeper.state.trash import TrashService
from statekeeper.storage.keyring import check_master_keys
from statekeeper.storage.masterkeys import LocalMasterKey
from statekeeper.storage.memory import MemoryStore
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.statefiles import state_bytes
from statekeeper.times import utcnow

#: Reviewed: these take a caller and change nothing (reads of the state itself
#: are audited all the same, through StateService.read, which has a scenario).
READ_ONLY = {
    "statekeeper.security.grants.ScopePolicy.allows": "a policy decision",
    "statekeeper.security.grants.visible": "filters a listing",
    "statekeeper.security.policy.Policy.allows": "the policy interface",
    "statekeeper.security.policy.require": "a policy check; the caller's event records it",
    "statekeeper.state.locks.LockService.fence": "a check inside a write; the write records it",
    "statekeeper.state.service.StateService.authorize": (
        "records only a refusal (its operation never runs); tests/security/test_body_after_authz"
    ),
    "statekeeper.state.service.StateService.refuse": (
        "records only a refusal found before its operation ran (a body over its limit or "
        "not matching its Content-MD5); tests/server/test_input_hardening"
    ),
    "statekeeper.state.lockkeeper.taken_by_another": "compares a lock's identity with the caller's",
    "statekeeper.security.tokens.TokenService.all": "lists tokens; a refusal is recorded",
    "statekeeper.state.history.HistoryService.versions": "lists versions",
    "statekeeper.state.inspection.Inspector.versions": "lists versions",
    "statekeeper.state.inspection.Inspector.resolve": "finds a version",
    "statekeeper.state.inspection.Inspector.history_entries": "lists versions",
    "statekeeper.state.inspection.Inspector.read": "reads through StateService.read",
    "statekeeper.state.inspection.Inspector.pull": "reads through StateService.read",
    "statekeeper.state.inspection.Inspector.diff": "reads through StateService.read",
    "statekeeper.state.listing.list_states": "lists states",
    "statekeeper.state.listing.list_locks": "lists locks",
    "statekeeper.state.operator.Operator.list_states": "lists states",
    "statekeeper.state.operator.Operator.summaries": "lists states (list_states' rows)",
    "statekeeper.state.operator.Operator.show": "reads through StateService.read",
    "statekeeper.state.operator.Operator.pull": "reads through StateService.read",
    "statekeeper.state.operator.Operator.history": "lists versions",
    "statekeeper.state.operator.Operator.diff": "reads through StateService.read",
    "statekeeper.state.operator.Operator.list_locks": (
        "lists locks; a lock past its lease goes first, an expire event of the server's own"
    ),
    "statekeeper.inventory.views.search": "reads the derived index, filtered by the policy",
    "statekeeper.inventory.views.counts": "reads the derived index, filtered by the policy",
    "statekeeper.server.ui.listing.fill_details": "reads through Operator.show or the index",
    "statekeeper.server.ui.reading.timeline": "reads through StateService.read",
    "statekeeper.state.trash.TrashService.entries": "lists deleted states, filtered by 'read'",
}

#: Takes a caller but is no operation: the emitter every scenario goes through.
EMITTER = "statekeeper.events.EventStream.event"

A = StateName("team/a.tfstate")  # two versions, serials 1 and 2
LOCKED = StateName("team/locked.tfstate")  # locked three hours ago by bob
FREE = StateName("team/free.tfstate")  # nothing there
RUN = StateName("team/run.tfstate")  # three snapshots written under the lock RUN_LOCK
RUN_LOCK = "5d7c1a52-0000-4000-8000-00000000c0de"
DELETED = StateName("team/deleted.tfstate")  # in the trash


@dataclass
class World:
    services: Services
    held: LockInfo

    @property
    def operator(self) -> Operator:
        s = self.services
        return Operator(s)


Scenario = Callable[[World, Caller], object]


def _holding(w: World, c: Caller) -> None:
    with w.services.locks.holding(FREE, "test", c):
        pass


def _migrate(w: World, c: Caller) -> None:
    source = MemoryStore(f"coverage-{uuid.uuid4()}")
    source.put(str(FREE), state_bytes(1), {})
    s = w.services
    migrate.migrate(migrate.StoreSource(source), s.states, s.locks, c)


def _compact(w: World, c: Caller) -> None:
    s = w.services
    assert s.ledger is not None
    Compactor(s.store, s.ledger, s.settings.history, s.policy, s.events).compact(RUN, RUN_LOCK, c)


def _prune(w: World, c: Caller) -> None:
    s = w.services
    rule = parse_history('[[retention]]\nstates = "team/a.tfstate"\nkeep_last = 1')
    prune(s.store, rule, s.policy, s.events, c)


def _trash(w: World) -> TrashService:
    assert w.services.trash is not None
    return w.services.trash


def _rotate(w: World, c: Caller) -> None:
    old = LocalMasterKey(b"o" * 32)
    # A store encrypted under the old key: rotating one never encrypted is refused.
    check_master_keys(w.services.keys.store.ring, [old])
    w.services.keys.rotate(c, old, LocalMasterKey(b"n" * 32))


def _bootstrap(w: World, c: Caller) -> None:
    target = Target(bucket="coverage", region="us-east-1", table=None)
    bootstrap(Aws(), target, w.services.events, c)


def _doctor_fix(w: World, c: Caller) -> None:
    target = Target(bucket="coverage", region="us-east-1", table=None)
    Aws().client("s3", "us-east-1").create_bucket(Bucket="coverage")
    doctor(Aws(), target, w.services.events, c, fix=True, probes=False, skip=["bucket.policy-*"])


#: Operation -> (what calls it once, the action it must record).
SCENARIOS: dict[str, tuple[Scenario, Action]] = {
    "statekeeper.state.reads.StateReads.read": (
        lambda w, c: w.services.states.read(A, c),
        Action.READ,
    ),
    "statekeeper.state.reads.StateReads.read_stream": (
        lambda w, c: w.services.states.read_stream(A, c),
        Action.READ,
    ),
    "statekeeper.state.reads.StateReads.read_existing": (
        lambda w, c: w.services.states.read_existing(A, c),
        Action.READ,
    ),
    "statekeeper.state.reads.StateReads.read_listed": (
        lambda w, c: w.services.states.read_listed(
            A, c, w.services.store.versions(str(A))[0].version_id
        ),
        Action.READ,
    ),
    "statekeeper.state.service.StateService.write": (
        lambda w, c: w.services.states.write(A, state_bytes(3), c),
        Action.WRITE,
    ),
    "statekeeper.state.service.StateService.delete": (
        lambda w, c: w.services.states.delete(A, c),
        Action.DELETE,
    ),
    "statekeeper.state.locks.LockService.lock": (
        lambda w, c: w.services.locks.lock(FREE, LockInfo.new("OperationTypePlan", "c").body, c),
        Action.LOCK,
    ),
    "statekeeper.state.locks.LockService.unlock": (
        lambda w, c: w.services.locks.unlock(LOCKED, w.held.body, c),
        Action.UNLOCK,
    ),
    "statekeeper.state.locks.LockService.force_unlock": (
        lambda w, c: w.services.locks.force_unlock(LOCKED, c, None),
        Action.FORCE_UNLOCK,
    ),
    "statekeeper.state.locks.LockService.remove": (
        lambda w, c: w.services.locks.remove(LOCKED, c, w.held.id),
        Action.FORCE_UNLOCK,
    ),
    "statekeeper.state.locks.LockService.holding": (_holding, Action.LOCK),
    "statekeeper.state.rollback.push": (
        lambda w, c: rollback.push(w.services.states, w.services.locks, A, state_bytes(3), c),
        Action.PUSH,
    ),
    "statekeeper.state.rollback.rollback": (
        lambda w, c: w.operator.rollback(c, A, "serial:1"),
        Action.ROLLBACK,
    ),
    "statekeeper.state.reap.unlock": (
        lambda w, c: reap.unlock(w.services.locks, LOCKED, c, lock_id=w.held.id),
        Action.FORCE_UNLOCK,
    ),
    "statekeeper.state.reap.reap": (
        lambda w, c: reap.reap(w.services.locks, c, older_than=timedelta(hours=1)),
        Action.REAP,
    ),
    "statekeeper.state.migrate.migrate": (_migrate, Action.MIGRATE),
    "statekeeper.state.operator.Operator.push": (
        lambda w, c: w.operator.push(c, A, state_bytes(3)),
        Action.PUSH,
    ),
    "statekeeper.state.operator.Operator.rollback": (
        lambda w, c: w.operator.rollback(c, A, "serial:1"),
        Action.ROLLBACK,
    ),
    "statekeeper.state.operator.Operator.unlock": (
        lambda w, c: w.operator.unlock(c, LOCKED, lock_id=w.held.id),
        Action.FORCE_UNLOCK,
    ),
    "statekeeper.state.operator.Operator.reap": (
        lambda w, c: w.operator.reap(c, older_than="1h"),
        Action.REAP,
    ),
    "statekeeper.security.tokens.TokenService.create": (
        lambda w, c: w.services.tokens.create(c, "ci", ["team/*:write"]),
        Action.TOKEN_CREATE,
    ),
    "statekeeper.security.tokens.TokenService.revoke": (
        lambda w, c: w.services.tokens.revoke(c, "existing"),
        Action.TOKEN_REVOKE,
    ),
    "statekeeper.storage.encrypting.KeyService.rotate": (_rotate, Action.KEY_ROTATE),
    "statekeeper.awssetup.bootstrap.bootstrap": (_bootstrap, Action.BOOTSTRAP),
    "statekeeper.awssetup.doctor.doctor": (_doctor_fix, Action.DOCTOR_FIX),
    "statekeeper.state.compaction.Compactor.compact": (_compact, Action.COMPACT),
    "statekeeper.state.prune.prune": (_prune, Action.PRUNE),
    "statekeeper.state.trash.TrashService.restore": (
        lambda w, c: _trash(w).restore(DELETED, c),
        Action.RESTORE,
    ),
    "statekeeper.state.trash.TrashService.purge": (
        lambda w, c: _trash(w).purge(DELETED, c),
        Action.PURGE,
    ),
    "statekeeper.state.trash.TrashService.expire": (
        lambda w, c: _trash(w).expire(c, now=utcnow() + timedelta(days=365)),
        Action.PURGE,
    ),
}

#: Operations with no grant to lack: rotation is an operator command on the store;
#: bootstrap and doctor act on AWS with the operator's own AWS credentials.
NOT_SUBJECT_TO_GRANTS = {
    "statekeeper.storage.encrypting.KeyService.rotate",
    "statekeeper.awssetup.bootstrap.bootstrap",
    "statekeeper.awssetup.doctor.doctor",
}
#: Scenarios that need S3 and DynamoDB: the moto server, emptied for each.
ON_AWS = {"statekeeper.awssetup.bootstrap.bootstrap", "statekeeper.awssetup.doctor.doctor"}


def _takes_a_caller(fn: Callable[..., object]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(str(p.annotation).split(".")[-1] == "Caller" for p in params)


def _operations() -> Iterator[str]:
    for info in pkgutil.walk_packages(statekeeper.__path__, "statekeeper."):
        if info.name.endswith(".__main__"):
            continue  # running it is running the CLI
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(value) and _takes_a_caller(value):
                yield f"{module.__name__}.{name}"
            elif inspect.isclass(value):
                for attr, member in vars(value).items():
                    if (
                        not attr.startswith("_")
                        and inspect.isfunction(member)
                        and _takes_a_caller(member)
                    ):
                        yield f"{module.__name__}.{name}.{attr}"


def test_every_operation_is_classified() -> None:
    found = set(_operations())
    assert found, "introspection found no operation at all"
    unclassified = found - READ_ONLY.keys() - SCENARIOS.keys() - {EMITTER}
    assert not unclassified, (
        "operations done for a caller with neither a scenario proving they emit one event "
        f"nor a place in the reviewed READ_ONLY list: {sorted(unclassified)}"
    )
    stale = (READ_ONLY.keys() | SCENARIOS.keys() | {EMITTER}) - found
    assert not stale, f"listed but no longer an operation: {sorted(stale)}"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    services = Services.build(Settings(data_dir=tmp_path / "data"))
    try:
        setup = Caller(actor="setup")
        services.states.write(A, state_bytes(1), setup)
        services.states.write(A, state_bytes(2), setup)
        # A lock the server took three hours ago (a lock's age is the server's clock),
        # for the identity the scenarios act as: unlocking it is a plain unlock.
        held = LockInfo.new("OperationTypeApply", "bob@ci")
        taken = replace(
            held.with_facts("alice@laptop", None), acquired=utcnow() - timedelta(hours=3)
        )
        services.lock_table.acquire(str(LOCKED), taken)
        services.tokens.create(setup, "existing", ["**:read"])
        # Snapshots of a run whose lock is gone (removed below the services: no event).
        run = LockInfo.new("OperationTypeApply", "setup", lock_id=RUN_LOCK)
        services.lock_table.acquire(str(RUN), run)
        for serial in (1, 2, 3):
            services.states.write(RUN, state_bytes(serial), setup, lock_id=RUN_LOCK)
        services.lock_table.delete_if_held_by(str(RUN), RUN_LOCK)
        services.states.write(DELETED, state_bytes(1), setup)
        services.states.delete(DELETED, setup)
        yield World(services, held)
    finally:
        services.close()


def _run(world: World, operation: str, caller: Caller) -> list[Event]:
    scenario, _ = SCENARIOS[operation]
    seen: list[Event] = []
    world.services.events.subscribe(seen.append)
    before = len(world.services.audit.query(AuditFilter()))
    try:
        scenario(world, caller)
    except Forbidden:
        pass
    trail = world.services.audit.query(AuditFilter())
    assert trail[before:] == seen, "the audit trail records exactly what the stream emitted"
    return seen


@pytest.mark.parametrize("operation", sorted(SCENARIOS))
def test_an_operation_emits_exactly_one_event(
    world: World, operation: str, request: pytest.FixtureRequest
) -> None:
    if operation in ON_AWS:
        request.getfixturevalue("moto")
    (event,) = _run(world, operation, Caller(actor="alice@laptop"))
    expected = (SCENARIOS[operation][1], "ok", "alice@laptop")
    assert (event.action, event.outcome, event.actor) == expected


@pytest.mark.parametrize("operation", sorted(SCENARIOS.keys() - NOT_SUBJECT_TO_GRANTS))
def test_a_refused_operation_emits_exactly_one_event(world: World, operation: str) -> None:
    # No grant at all; a reap needs to see the locks to try to remove one, so its
    # caller may read everything and change nothing.
    scopes = ("**:read",) if SCENARIOS[operation][1] is Action.REAP else ()
    (event,) = _run(world, operation, Caller(actor="stranger", scopes=scopes))
    expected = (SCENARIOS[operation][1], "forbidden", "stranger")
    assert (event.action, event.outcome, event.actor) == expected
