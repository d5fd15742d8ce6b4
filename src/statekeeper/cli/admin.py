"""Tokens and the audit trail: on the configured store, or through a server's admin API.

Like :mod:`statekeeper.cli.context`'s backends for states and locks, both
sides answer with the JSON the server's ``/api/v1/audit`` and
``/api/v1/tokens`` publish, so ``token`` and ``audit`` print one way whichever
is used. Locally the operator acts as ``user@host``; through ``--server`` the
server records whoever the token names.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from statekeeper.cli.remote import API, RemoteBackend

if TYPE_CHECKING:
    from statekeeper.app import Services
    from statekeeper.cli.context import CliContext
    from statekeeper.security.audit import AuditEvent, AuditFilter, AuditLog
    from statekeeper.security.tokens import TokenStore

__all__ = ["Admin", "LocalAdmin", "RemoteAdmin", "admin_for"]

log = logging.getLogger("statekeeper.audit")


class Admin(Protocol):
    def audit(
        self,
        state: str | None,
        actor: str | None,
        action: str | None,
        since: datetime | None,
        limit: int,
    ) -> list[dict[str, Any]]: ...
    def tokens(self) -> list[dict[str, Any]]: ...
    def create_token(self, name: str, scopes: list[str], expires: str | None) -> dict[str, Any]: ...
    def revoke_token(self, name: str) -> dict[str, Any]: ...
    def close(self) -> None: ...


class _LoggedOnly:
    """The audit log of a token change made with a tokens file and no store.

    Such a change has no store to record it in (the replicas' store was not
    given); it goes to the log, and the CLI says how to record it properly.
    """

    def record(self, event: AuditEvent) -> None:
        log.warning("audit event not stored (no --store given): %s", event.to_json())

    def query(self, where: AuditFilter) -> list[AuditEvent]:
        return []

    def close(self) -> None:
        return None


class LocalAdmin:
    """Tokens and the audit trail of the configured store, as ``user@host``."""

    def __init__(self, cli: CliContext) -> None:
        from statekeeper.cli.context import local_caller
        from statekeeper.security.tokens import FileTokenStore

        self.caller = local_caller()
        settings = cli.settings()
        self._services: Services | None = None
        self._tokens: TokenStore | None = None
        self._audit: AuditLog | None = None
        default_db = settings.data_dir / "statekeeper.db"
        if settings.tokens_file is not None and settings.store is None and not default_db.exists():
            # A tokens file for stateless replicas, and no store: open none, so that no
            # stray ./.statekeeper database appears.
            self._tokens = FileTokenStore(settings.tokens_file)
            self._audit = _LoggedOnly()
            self.audited = False
        else:
            self._services = cli.services()
            self._tokens = self._services.tokens
            self._audit = self._services.audit
            self.audited = True

    def _token_store(self) -> TokenStore:
        from statekeeper.errors import ConfigError

        if self._tokens is None:
            raise ConfigError(
                "this store keeps no tokens (it has no database): give --tokens-file FILE, the "
                "TOML file the servers read (setting tokens_file)"
            )
        return self._tokens

    def _audit_log(self) -> AuditLog:
        assert self._audit is not None, "set in __init__"
        return self._audit

    def audit(
        self,
        state: str | None,
        actor: str | None,
        action: str | None,
        since: datetime | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        from statekeeper.security.audit import AuditFilter

        where = AuditFilter(state=state, actor=actor, action=action, since=since, limit=limit)
        return [e.to_json() for e in self._audit_log().query(where)]

    def tokens(self) -> list[dict[str, Any]]:
        return [dict(r.to_json()) for r in self._token_store().all()]

    def create_token(self, name: str, scopes: list[str], expires: str | None) -> dict[str, Any]:
        from statekeeper.security.tokens import create_token
        from statekeeper.times import parse_duration

        lifetime = parse_duration(expires, what="--expires") if expires else None
        issued = create_token(
            self._token_store(), self._audit_log(), self.caller, name, scopes, lifetime
        )
        return {**issued.record.to_json(), "secret": issued.secret}

    def revoke_token(self, name: str) -> dict[str, Any]:
        from statekeeper.security.tokens import revoke_token

        record = revoke_token(self._token_store(), self._audit_log(), self.caller, name)
        return dict(record.to_json())

    def close(self) -> None:
        # Services opened through the CliContext are closed with it.
        return None


class RemoteAdmin(RemoteBackend):
    """The same through a server's ``/api/v1/audit`` and ``/api/v1/tokens`` (admin only)."""

    audited = True

    def audit(
        self,
        state: str | None,
        actor: str | None,
        action: str | None,
        since: datetime | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        from statekeeper.times import format_rfc3339

        params = {
            "state": state,
            "actor": actor,
            "action": action,
            "since": format_rfc3339(since) if since else None,
            "limit": limit,
        }
        events: list[dict[str, Any]] = self._json("GET", f"{API}/audit", params=params)["events"]
        return events

    def tokens(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self._json("GET", f"{API}/tokens")["tokens"]
        return records

    def create_token(self, name: str, scopes: list[str], expires: str | None) -> dict[str, Any]:
        body = {"name": name, "scopes": scopes, "expires": expires}
        issued: dict[str, Any] = self._json("POST", f"{API}/tokens", body=body)
        return issued

    def revoke_token(self, name: str) -> dict[str, Any]:
        from urllib.parse import quote

        record: dict[str, Any] = self._json("DELETE", f"{API}/tokens/{quote(name, safe='')}")
        return record


def admin_for(cli: CliContext) -> LocalAdmin | RemoteAdmin:
    """The admin operations for the global options: ``--server``'s API, else the store."""
    if cli.server:
        remote = RemoteAdmin(cli.server, cli.token)
        cli.on_close(remote.close)
        return remote
    return LocalAdmin(cli)
