"""Who may do what. One policy, consulted by the services before they act.

Until access control is configured every caller may do everything, force-unlock
included: the server refuses to bind anything but loopback in that case.
"""

from __future__ import annotations

import enum
from typing import Protocol

from statekeeper.errors import Forbidden
from statekeeper.security.caller import Caller
from statekeeper.terraform.names import StateName

__all__ = ["Permission", "Policy", "require"]


class Permission(enum.IntEnum):
    """Ordered: each permission includes the ones below it."""

    #: The server's own metrics (/metrics): not about a state, so only a grant on
    #: ``**`` carries it (``**:metrics`` for a scraper, or any ``**`` grant).
    METRICS = 0
    OUTPUTS = 1  # read a state with resources stripped (terraform_remote_state)
    READ = 2
    WRITE = 3  # includes lock and unlock of one's own locks
    ADMIN = 4  # force-unlock, rollback, forced push, delete


class Policy(Protocol):
    def allows(self, caller: Caller, name: StateName | None, needed: Permission) -> bool:
        """True when ``caller`` holds ``needed`` (or more) on ``name``."""
        ...


def require(
    policy: Policy, caller: Caller, name: StateName | None, needed: Permission, what: str
) -> None:
    """Raise Forbidden, naming the missing permission, unless ``policy`` allows."""
    if not policy.allows(caller, name, needed):
        target = str(name) if name is not None else "this server"
        raise Forbidden(
            f"{caller.actor} may not {what} {target}: it needs the "
            f"'{needed.name.lower()}' permission on it"
        )
