"""The lock policy: which locks share, and how long a lock may live, per state glob.

Read from the ``[lock_policy]`` table of the config file
(``docs/configuration.md#lock-policy``)::

    [lock_policy]
    mode = "shared-plans"          # or "exclusive": Terraform's own semantics
    ttl = { plan = "1h" }          # a lease by operation; none for the others
    sweep = "1m"                   # how often the server looks for expired locks

    [[lock_policy.rules]]          # the first rule naming a state decides for it
    states = ["prod/**"]
    mode = "exclusive"
    ttl = { plan = "15m", apply = "12h" }

A rule's ``ttl`` names operations the way ``locks reap --operation`` does
(``plan`` is Terraform's ``OperationTypePlan``; ``"*"`` is every operation)
and overrides the section's for those operations only; ``"none"`` turns a
lease off. The rules themselves live in :mod:`statekeeper.state.lockkeeper`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from statekeeper.errors import BadRequest, ConfigError
from statekeeper.state.globs import StateGlob, parse_glob
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.times import format_duration, parse_duration

__all__ = ["LockMode", "LockPolicy", "LockRule", "StateLockPolicy", "is_operation"]

#: Terraform's name for the operation of ``terraform plan``.
PLAN = "OperationTypePlan"
#: A ``ttl`` key for every operation a rule names no other key for.
ANY_OPERATION = "*"
#: States whose resolved policy is remembered (the rules are matched again beyond).
_CACHED = 4096


class LockMode(StrEnum):
    #: One holder at a time, whatever it does: Terraform's own semantics.
    EXCLUSIVE = "exclusive"
    #: Plans share the lock with plans; an apply (any other operation) takes it
    #: from them and, while it holds it, new plans wait.
    SHARED_PLANS = "shared-plans"


def is_operation(operation: str, wanted: str) -> bool:
    """``operation`` (Terraform's ``OperationTypePlan``) is ``wanted`` (``plan``)."""
    op, want = operation.lower(), wanted.lower()
    return op == want or op == "operationtype" + want


def _mode(value: object, where: str) -> LockMode:
    try:
        return LockMode(str(value))
    except ValueError:
        raise ConfigError(
            f"{where}: mode = {value!r} is not a lock mode; use "
            + " or ".join(repr(m.value) for m in LockMode)
        ) from None


def _ttl(value: object, where: str) -> dict[str, timedelta | None]:
    if not isinstance(value, Mapping):
        raise ConfigError(f'{where}: ttl is a table of durations by operation: {{ plan = "1h" }}')
    out: dict[str, timedelta | None] = {}
    for op, text in value.items():
        if not isinstance(text, str):
            raise ConfigError(f'{where}: ttl.{op} = {text!r} is not a duration string ("1h")')
        if text.strip().lower() in ("none", "0", "0s", ""):
            out[op.lower()] = None
            continue
        try:
            out[op.lower()] = parse_duration(text, what=f"{where}: ttl.{op}")
        except BadRequest as exc:
            raise ConfigError(exc.message) from exc
    return out


def _known(table: Mapping[str, object], keys: set[str], where: str) -> None:
    unknown = set(table) - keys
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: "
            + ", ".join(sorted(keys))
        )


@dataclass(frozen=True)
class LockRule:
    """The states some globs name, and what differs for them."""

    states: tuple[StateGlob, ...]
    mode: LockMode | None = None
    ttl: Mapping[str, timedelta | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "lock_policy rule " + ", ".join(g.pattern for g in self.states)

    def covers(self, name: StateName) -> bool:
        return any(g.covers(name) for g in self.states)


@dataclass(frozen=True)
class StateLockPolicy:
    """The policy of one state: its mode, its leases, and which setting said so."""

    mode: LockMode
    ttl: Mapping[str, timedelta | None]
    source: str

    def shares(self, lock: LockInfo) -> bool:
        """A lock taken through statekeeper for a plan, under ``shared-plans``.

        A lock Terraform's own backend "s3" wrote (no ``actor``) is exclusive
        whatever it says: that client deletes its lock when done, unaware of
        anyone sharing it.
        """
        return (
            self.mode is LockMode.SHARED_PLANS
            and lock.damaged is None
            and lock.actor is not None
            and is_operation(lock.operation, "plan")
        )

    def lease(self, operation: str) -> timedelta | None:
        """How long a lock of ``operation`` may be held (None: for ever)."""
        for op, ttl in self.ttl.items():
            if op != ANY_OPERATION and is_operation(operation, op):
                return ttl
        return self.ttl.get(ANY_OPERATION)

    def describe_lease(self, operation: str) -> str:
        ttl = self.lease(operation)
        what = operation or "operation-less"
        return f"the {format_duration(ttl)} lease of {what} locks ({self.source})" if ttl else ""


@dataclass(frozen=True)
class LockPolicy:
    """The whole ``[lock_policy]`` table."""

    mode: LockMode = LockMode.SHARED_PLANS
    ttl: Mapping[str, timedelta | None] = field(default_factory=dict)
    rules: tuple[LockRule, ...] = ()
    #: Seconds between the server's sweeps for expired locks (0: only lazily).
    sweep: float = 60.0
    _cache: dict[str, StateLockPolicy] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @property
    def has_leases(self) -> bool:
        return any(self.ttl.values()) or any(any(r.ttl.values()) for r in self.rules)

    def for_state(self, name: StateName | str) -> StateLockPolicy:
        """The policy of ``name``: the first rule naming it, else the section's."""
        key = str(name)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= _CACHED:
                self._cache.clear()
            found = self._cache[key] = self._resolve(StateName(key))
        return found

    def _resolve(self, state: StateName) -> StateLockPolicy:
        for rule in self.rules:
            if rule.covers(state):
                return StateLockPolicy(
                    mode=rule.mode or self.mode,
                    ttl={**self.ttl, **rule.ttl},
                    source=rule.label,
                )
        return StateLockPolicy(mode=self.mode, ttl=self.ttl, source="lock_policy")

    @classmethod
    def parse(cls, value: object) -> LockPolicy:
        """From the config file's table, or its TOML text (``STATEKEEPER_LOCK_POLICY``)."""
        if isinstance(value, LockPolicy):
            return value
        if isinstance(value, str):
            import tomllib  # here: only a table given as text needs it

            try:
                value = tomllib.loads(value)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(
                    f'it is the [lock_policy] table as TOML text, e.g. mode = "exclusive" ({exc})'
                ) from exc
        if not isinstance(value, Mapping):
            raise ConfigError("lock_policy is a table: [lock_policy] with mode, ttl and rules")
        where = "lock_policy"
        _known(value, {"mode", "ttl", "rules", "sweep"}, where)
        rules = value.get("rules", [])
        if not isinstance(rules, list) or not all(isinstance(r, Mapping) for r in rules):
            raise ConfigError(f"{where}: rules is a list of tables: [[lock_policy.rules]]")
        sweep = value.get("sweep", "1m")
        try:
            sweep_s = (
                0.0 if str(sweep) in ("0", "0s") else parse_duration(str(sweep)).total_seconds()
            )
        except BadRequest as exc:
            raise ConfigError(f"{where}: sweep: {exc.message}") from exc
        return cls(
            mode=_mode(value.get("mode", LockMode.SHARED_PLANS.value), where),
            ttl=_ttl(value.get("ttl", {}), where),
            rules=tuple(_rule(r, f"{where}.rules[{i}]") for i, r in enumerate(rules)),
            sweep=sweep_s,
        )


def _rule(raw: Mapping[str, object], where: str) -> LockRule:
    _known(raw, {"states", "mode", "ttl"}, where)
    globs = raw.get("states")
    if isinstance(globs, str):
        globs = [globs]
    if not isinstance(globs, list) or not globs or not all(isinstance(g, str) for g in globs):
        raise ConfigError(f'{where}: states is a list of state globs: states = ["team/**"]')
    try:
        parsed = tuple(parse_glob(g) for g in globs)
    except BadRequest as exc:
        raise ConfigError(f"{where}: {exc.message}") from exc
    mode = raw.get("mode")
    return LockRule(
        states=parsed,
        mode=None if mode is None else _mode(mode, where),
        ttl=_ttl(raw.get("ttl", {}), where),
    )
