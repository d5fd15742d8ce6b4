"""Grants: which permission a caller holds on which states, by state glob.

A grant is written ``PATTERN:PERMISSION``, for example ``team/app/*:write``.

- ``PATTERN`` is a state glob (:mod:`statekeeper.state.globs`): ``*`` within
  one path segment, ``?`` one character, ``**`` any number of whole segments;
  ``**`` alone matches every state.
- Permissions are ordered (``outputs`` < ``read`` < ``write`` < ``admin``); a
  grant includes the ones below it.
- Actions on the server itself (managing tokens, reading the audit trail) are
  not about one state: they need ``admin`` on ``**``.
- A listing (states, locks, the trash, search and its counts) shows only the
  states the caller may ``read`` (:func:`visible`): ``outputs`` is what
  ``terraform_remote_state`` needs, the outputs of a state it names, and a
  listing tells more (the other names under a grant, who holds their locks).

A caller whose ``scopes`` is None is not subject to grants: the operator on
the machine (the CLI, which opens the store directly) or a loopback server
with no access control configured. The HTTP layer gives every caller it
authenticates a tuple of scopes, possibly empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from statekeeper.errors import BadRequest, InvalidStateName
from statekeeper.patterns import any_case, whole
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, Policy
from statekeeper.state.globs import GLOB, StateGlob, glob_of, stored_glob_of
from statekeeper.terraform.names import StateName

__all__ = [
    "GRANT_PATTERN",
    "LISTED",
    "Grant",
    "ScopePolicy",
    "parse_grant",
    "parse_grants",
    "visible",
]

_PERMISSIONS = {p.name.lower(): p for p in Permission}
_GRANT_HELP = (
    "write a grant as PATTERN:PERMISSION, e.g. 'team/app/*:write' or '**:admin', with "
    "PERMISSION one of " + ", ".join(_PERMISSIONS)
)
#: What :func:`parse_grant` takes, as a JSON Schema pattern (:mod:`statekeeper.patterns`):
#: the glob up to the last ':' (a state name may hold ':'), then a permission in any case.
GRANT_PATTERN = whole(rf"\s*{GLOB}:\s*(?:{'|'.join(map(any_case, _PERMISSIONS))})\s*")


@dataclass(frozen=True)
class Grant:
    glob: StateGlob
    permission: Permission

    @property
    def pattern(self) -> str:
        return self.glob.pattern

    def __str__(self) -> str:
        return f"{self.pattern}:{self.permission.name.lower()}"

    def covers(self, name: StateName | None) -> bool:
        """True when the grant's pattern names ``name`` (None: the server itself)."""
        return self.glob.covers(name)


#: The permission a listing filters by (see :func:`visible`).
LISTED = Permission.READ


@lru_cache(maxsize=4096)
def parse_grant(text: str) -> Grant:
    """Parse ``PATTERN:PERMISSION`` as written (a new token, the tokens file, an OIDC
    rule); the last ``:`` splits (state names may hold ``:``)."""
    pattern, permission = _split(text)
    return Grant(glob_of(pattern, _GRANT_HELP), permission)


@lru_cache(maxsize=4096)
def _held_grant(text: str) -> Grant:
    """A grant a caller holds, as its token was stored: a pattern ending in ``/``,
    accepted before it was refused, is read back and matches nothing, as it always
    did (:func:`~statekeeper.state.globs.stored_glob`), so the token's other grants
    keep working."""
    pattern, permission = _split(text)
    return Grant(stored_glob_of(pattern, _GRANT_HELP), permission)


def _split(text: str) -> tuple[str, Permission]:
    pattern, sep, perm = text.strip().rpartition(":")
    if not sep or not pattern:
        raise BadRequest(f"{text!r} is not a grant; " + _GRANT_HELP)
    permission = _PERMISSIONS.get(perm.strip().lower())
    if permission is None:
        raise BadRequest(f"{text!r} names an unknown permission {perm!r}; " + _GRANT_HELP)
    return pattern, permission


def parse_grants(texts: list[str] | tuple[str, ...]) -> tuple[Grant, ...]:
    return tuple(parse_grant(t) for t in texts)


class ScopePolicy:
    """The policy of a server with access control: the caller's grants decide."""

    def allows(self, caller: Caller, name: StateName | None, needed: Permission) -> bool:
        if caller.scopes is None:
            return True
        return any(
            g.permission >= needed and g.covers(name) for g in map(_held_grant, caller.scopes)
        )


def visible(policy: Policy, caller: Caller, key: str | StateName) -> bool:
    """True when a listing may show ``key`` to the caller: a state it may ``read``. Every
    listing filters by this, so that none reveals a state the caller has no grant on,
    nor more than its outputs to an ``outputs``-only caller. A ``StateName`` (a
    listing validated it already) is not validated again."""
    if isinstance(key, StateName):
        return policy.allows(caller, key, LISTED)
    try:
        name = StateName(key)
    except InvalidStateName:
        return False  # not a state (statekeeper's own statekeeper!/ objects)
    return policy.allows(caller, name, LISTED)
