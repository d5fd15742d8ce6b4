"""Grants: which permission a caller holds on which states, by state-name glob.

A grant is written ``PATTERN:PERMISSION``, for example ``team/app/*:write``.

- ``*`` matches any run of characters within one path segment (it does not
  cross ``/``), ``?`` one character other than ``/``, and ``**`` any number of
  whole segments, zero included: ``team/**`` matches ``team/a.tfstate`` and
  ``team/a/b/c.tfstate``, and ``**`` alone matches every state.
- Permissions are ordered (``outputs`` < ``read`` < ``write`` < ``admin``); a
  grant includes the ones below it.
- Actions on the server itself (managing tokens, reading the audit trail) are
  not about one state: they need ``admin`` on ``**``.

A caller whose ``scopes`` is None is not subject to grants: the operator on
the machine (the CLI, which opens the store directly) or a loopback server
with no access control configured. The HTTP layer gives every caller it
authenticates a tuple of scopes, possibly empty.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

from statekeeper.errors import BadRequest, InvalidStateName
from statekeeper.security.caller import Caller
from statekeeper.security.policy import Permission, Policy
from statekeeper.terraform.names import StateName

__all__ = ["Grant", "ScopePolicy", "parse_grant", "parse_grants", "visible"]

_PERMISSIONS = {p.name.lower(): p for p in Permission}
_GRANT_HELP = (
    "write a grant as PATTERN:PERMISSION, e.g. 'team/app/*:write' or '**:admin', with "
    "PERMISSION one of " + ", ".join(_PERMISSIONS)
)


@dataclass(frozen=True)
class Grant:
    pattern: str
    permission: Permission
    regex: re.Pattern[str]

    def __str__(self) -> str:
        return f"{self.pattern}:{self.permission.name.lower()}"

    def covers(self, name: StateName | None) -> bool:
        """True when the grant's pattern names ``name`` (None: the server itself)."""
        if name is None:
            return self.pattern == "**"
        return self.regex.fullmatch(str(name)) is not None


def _compile(pattern: str) -> re.Pattern[str]:
    segments = pattern.split("/")
    parts: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            # Zero or more whole segments, each with its separator.
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        if "**" in segment:
            raise BadRequest(f"the pattern {pattern!r} uses '**' inside a segment; " + _GRANT_HELP)
        out = ""
        for ch in segment:
            out += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
        parts.append(out if last else out + "/")
    return re.compile("".join(parts))


@lru_cache(maxsize=4096)
def parse_grant(text: str) -> Grant:
    """Parse ``PATTERN:PERMISSION``; the last ``:`` splits (state names may hold ``:``)."""
    pattern, sep, perm = text.strip().rpartition(":")
    if not sep or not pattern:
        raise BadRequest(f"{text!r} is not a grant; " + _GRANT_HELP)
    permission = _PERMISSIONS.get(perm.strip().lower())
    if permission is None:
        raise BadRequest(f"{text!r} names an unknown permission {perm!r}; " + _GRANT_HELP)
    if pattern.startswith("/") or "//" in pattern:
        raise BadRequest(f"the pattern {pattern!r} has an empty segment; " + _GRANT_HELP)
    return Grant(pattern, permission, _compile(pattern))


def parse_grants(texts: list[str] | tuple[str, ...]) -> tuple[Grant, ...]:
    return tuple(parse_grant(t) for t in texts)


class ScopePolicy:
    """The policy of a server with access control: the caller's grants decide."""

    def allows(self, caller: Caller, name: StateName | None, needed: Permission) -> bool:
        if caller.scopes is None:
            return True
        return any(g.permission >= needed and g.covers(name) for g in parse_grants(caller.scopes))


def visible(policy: Policy, caller: Caller, names: Iterable[str]) -> Iterator[str]:
    """The names the caller may see at all (``outputs`` or more): for every listing,
    so that a listing never reveals a state the caller has no grant on."""
    for name in names:
        try:
            state = StateName(name)
        except InvalidStateName:
            continue  # not a state (statekeeper's own statekeeper!/ objects)
        if policy.allows(caller, state, Permission.OUTPUTS):
            yield name
