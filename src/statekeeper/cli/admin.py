"""Tokens and the audit trail: on the configured store, or through a server's admin API.

Like :mod:`statekeeper.cli.context`'s backends for states and locks, both
sides answer with the views (:mod:`statekeeper.state.views`) the server's
``/api/v1/audit`` and ``/api/v1/tokens`` publish, so ``token`` and ``audit`` print one way whichever
is used. Locally the operator acts as ``user@host``; through ``--server`` the
server records whoever the token names.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from statekeeper.cli.remote import API, RemoteBackend

if TYPE_CHECKING:
    from statekeeper.cli.context import CliContext
    from statekeeper.events import Event
    from statekeeper.security.audit import AuditFilter
    from statekeeper.security.tokens import TokenService
    from statekeeper.state.views import AuditEventView, TokenCreated, TokenView

__all__ = ["Admin", "LocalAdmin", "RemoteAdmin", "admin_for", "log_unstored"]

log = logging.getLogger("statekeeper.audit")


class Admin(Protocol):
    def audit(self, where: AuditFilter) -> list[AuditEventView]: ...
    def tokens(self) -> list[TokenView]: ...
    def create_token(self, name: str, scopes: list[str], expires: str | None) -> TokenCreated: ...
    def revoke_token(self, name: str) -> TokenView: ...
    def close(self) -> None: ...


def log_unstored(event: Event) -> None:
    """The audit trail of a change made with no store to record it in: a token
    change with a tokens file, a bootstrap or ``doctor --fix`` (the servers' store
    was not given, and no embedded database is there to open). It goes to the
    log at INFO, as JSON: the command's own warning says how to record it
    properly, and its report already said what changed.
    """
    log.info("audit event not stored (no --store given): %s", event.json_text())


class LocalAdmin:
    """Tokens and the audit trail of the configured store, as ``user@host``."""

    def __init__(self, cli: CliContext) -> None:
        from statekeeper.cli.context import local_caller

        self.caller = local_caller()
        self._cli = cli
        settings = cli.settings()
        default_db = settings.data_dir / "statekeeper.db"
        #: False when a token change is only logged (a tokens file and no store).
        self.audited = not (
            settings.tokens_file is not None and settings.store is None and not default_db.exists()
        )
        self._token_service: TokenService | None = None
        if not self.audited:
            # A tokens file for stateless replicas, and no store: open none, so that no
            # stray ./.statekeeper database appears.
            from statekeeper.events import EventStream
            from statekeeper.security.grants import ScopePolicy
            from statekeeper.security.tokens import TokenService
            from statekeeper.security.tokenstores import FileTokenStore

            assert settings.tokens_file is not None
            events = EventStream()
            events.subscribe(log_unstored)
            self._token_service = TokenService(
                FileTokenStore(settings.tokens_file), ScopePolicy(), events
            )

    def _tokens(self) -> TokenService:
        if self._token_service is None:
            self._token_service = self._cli.services().tokens
        return self._token_service

    def audit(self, where: AuditFilter) -> list[AuditEventView]:
        from statekeeper.state.views import AuditEventView

        return [AuditEventView.of(e) for e in self._cli.services().audit.query(where)]

    def tokens(self) -> list[TokenView]:
        from statekeeper.state.views import TokenView

        return [TokenView.of(r) for r in self._tokens().all(self.caller)]

    def create_token(self, name: str, scopes: list[str], expires: str | None) -> TokenCreated:
        from statekeeper.state.views import TokenCreated
        from statekeeper.times import parse_duration

        lifetime = parse_duration(expires, what="--expires") if expires else None
        issued = self._tokens().create(self.caller, name, scopes, lifetime)
        return TokenCreated.issued(issued.record, issued.secret)

    def revoke_token(self, name: str) -> TokenView:
        from statekeeper.state.views import TokenView

        return TokenView.of(self._tokens().revoke(self.caller, name))

    def close(self) -> None:
        # Services opened through the CliContext are closed with it.
        return None


class RemoteAdmin(RemoteBackend):
    """The same through a server's ``/api/v1/audit`` and ``/api/v1/tokens`` (admin only)."""

    audited = True

    def audit(self, where: AuditFilter) -> list[AuditEventView]:
        from statekeeper.state.views import AuditList
        from statekeeper.times import format_rfc3339

        params = {
            "state": where.state,
            "actor": where.actor,
            "action": where.action,
            "since": format_rfc3339(where.since) if where.since else None,
            "limit": where.limit,
        }
        return self._view(AuditList, "GET", f"{API}/audit", params=params).events

    def tokens(self) -> list[TokenView]:
        from statekeeper.state.views import TokenList

        return self._view(TokenList, "GET", f"{API}/tokens").tokens

    def create_token(self, name: str, scopes: list[str], expires: str | None) -> TokenCreated:
        from statekeeper.state.views import TokenCreated

        body = {"name": name, "scopes": scopes, "expires": expires}
        return self._view(TokenCreated, "POST", f"{API}/tokens", body=body)

    def revoke_token(self, name: str) -> TokenView:
        from urllib.parse import quote

        from statekeeper.state.views import TokenView

        return self._view(TokenView, "DELETE", f"{API}/tokens/{quote(name, safe='')}")


def admin_for(cli: CliContext) -> LocalAdmin | RemoteAdmin:
    """The admin operations for the global options: ``--server``'s API, else the store."""
    if cli.server:
        remote = RemoteAdmin(cli.server, cli.token)
        cli.on_close(remote.close)
        return remote
    return LocalAdmin(cli)
