"""Who is acting, as the server authenticated them or as the CLI runs."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ANONYMOUS", "RESERVED_ACTORS", "SERVER_ACTOR", "Caller"]

#: The actor of a caller without credentials: every caller of a loopback server
#: without access control, and a refused request that carried none.
ANONYMOUS = "anonymous"
#: The actor of what the server does by itself (a lock's lease expiring, the
#: background prune, a webhook's test delivery).
SERVER_ACTOR = "statekeeper"
#: The labels the audit trail gives callers that are no token: ``anonymous``, the
#: server itself, a refused web OIDC sign-in (``oidc``) and a lock whose taker is
#: not known (``unknown``). A token may not take one of these names (in any case),
#: or its reads and writes would pass for theirs. ``oidc:…``, ``unknown:…`` and
#: ``user@host`` hold characters no token name may hold.
RESERVED_ACTORS = frozenset({ANONYMOUS, SERVER_ACTOR, "oidc", "unknown"})


@dataclass(frozen=True)
class Caller:
    """Who is acting: a token name, an OIDC subject, or the local operator."""

    actor: str = ANONYMOUS
    remote_addr: str | None = None
    claims: dict[str, str] = field(default_factory=dict)
    #: The grants ("PATTERN:PERMISSION") of an authenticated caller. None means the
    #: caller is not subject to grants: the local operator, or a loopback server
    #: with no access control configured (see services/policy.py).
    scopes: tuple[str, ...] | None = None
