"""Who is acting, as the server authenticated them or as the CLI runs."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Caller"]


@dataclass(frozen=True)
class Caller:
    """Who is acting: a token name, an OIDC subject, or the local operator."""

    actor: str = "anonymous"
    remote_addr: str | None = None
    claims: dict[str, str] = field(default_factory=dict)
    #: The grants ("PATTERN:PERMISSION") of an authenticated caller. None means the
    #: caller is not subject to grants: the local operator, or a loopback server
    #: with no access control configured (see services/policy.py).
    scopes: tuple[str, ...] | None = None
