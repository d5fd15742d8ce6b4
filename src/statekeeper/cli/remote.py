"""The operator's operations through a running server's JSON API (``--server``).

Each answer is parsed into the view the API publishes for it, so a command
prints the same thing whichever backend answered.

Error answers (``{"error": code, "message": …}``) become the same exception
the server raised, so the CLI prints the same message and exits with the same
code as it would on a local store.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from statekeeper import errors
from statekeeper.errors import (
    ConfigError,
    LockConflict,
    StatekeeperError,
    StorageError,
    Unauthenticated,
)
from statekeeper.inventory.query import parse_query
from statekeeper.inventory.views import InventoryCounts, SearchResult
from statekeeper.security.redaction import redacted
from statekeeper.state import views
from statekeeper.state.listing import UNADDRESSABLE_HEADER, Unaddressable
from statekeeper.terraform.layout import LOCK_FIELDS
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName

__all__ = ["RemoteBackend", "error_from_response"]

API = "/api/v1"
V = TypeVar("V", bound=BaseModel)
T = TypeVar("T")


def _classes() -> dict[str, type[StatekeeperError]]:
    out: dict[str, type[StatekeeperError]] = {}
    stack: list[type[StatekeeperError]] = [StatekeeperError]
    while stack:
        cls = stack.pop()
        out.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return out


def error_from_response(response: httpx.Response) -> StatekeeperError:
    """The exception an error answer stands for."""
    try:
        body = views.ErrorBody.model_validate_json(response.content)
    except ValidationError:
        return StatekeeperError(
            f"the server answered {response.status_code} to {response.request.method} "
            f"{response.request.url.path}: {response.text[:200]!r}"
        )
    code, message = body.error, body.message
    extra = body.model_extra or {}
    if code in ("locked", "lock_mismatch") and "ID" in extra:
        holder = {k: extra[k] for k in LOCK_FIELDS if k in extra}
        return LockConflict(LockInfo.parse(json.dumps(holder).encode()), message)
    if response.status_code == 401:
        return Unauthenticated(message + " (give a token with --token or STATEKEEPER_TOKEN)")
    cls = _classes().get(code, StatekeeperError)
    if cls in (LockConflict, errors.LockMismatch):
        cls = errors.Conflict
    try:
        return cls(message)
    except TypeError:
        return StatekeeperError(message)


def _path(kind: str, name: StateName) -> str:
    return f"{API}/{kind}/{quote(str(name), safe='/')}"


def _parse(adapter: TypeAdapter[T], response: httpx.Response) -> T:
    try:
        return adapter.validate_json(response.content)
    except ValidationError as exc:
        raise StatekeeperError(
            f"the server's answer to {response.request.method} {response.request.url.path} "
            f"is not what its API documents ({exc.error_count()} problem(s), first: "
            f"{exc.errors()[0]['msg']}); is it a statekeeper server of another version?"
        ) from exc


def _base_url(url: str) -> str:
    """The --server URL, checked: an http(s) URL of a host and nothing after it.

    Refused here, exit 2, rather than as httpx's traceback (a bad port) or as the
    server's 404 (a path: the API's routes are absolute, /api/v1/…).
    """
    shown = redacted(url)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(
            f"--server {shown!r} is not a valid URL ({exc}); give the server's base URL, "
            "e.g. http://HOST:PORT"
        ) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            f"--server {shown!r} is not an http(s) URL of a host; give the server's base "
            "URL, e.g. http://HOST:PORT"
        )
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        raise ConfigError(
            f"--server {shown!r} has a path after the host; give the server's base URL, "
            "e.g. http://HOST:PORT (the commands add /api/v1/… themselves)"
        )
    return url.rstrip("/")


def _auth_headers(token: str | None) -> dict[str, str]:
    """The Authorization header for ``token``, surrounding whitespace (a pasted secret's
    newline) dropped. A token with a character a bearer token cannot hold is refused
    without being printed: it is a secret, and no request was sent."""
    token = (token or "").strip()
    if not token:
        return {}
    # A bearer token (RFC 6750; a JWT too) is visible ASCII; httpx encodes headers as
    # ASCII and h11 refuses a control character, each with the secret in its message.
    if not all("!" <= c <= "~" for c in token):
        kind = (
            "a non-ASCII character"
            if not token.isascii()
            else "a space"
            if " " in token
            else "a control character"
        )
        raise ConfigError(
            f"the token (--token or STATEKEEPER_TOKEN) holds {kind}, which a bearer "
            "token cannot; check that the whole secret was copied, and nothing else"
        )
    return {"Authorization": f"Bearer {token}"}


class RemoteBackend:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = _base_url(url)
        headers = _auth_headers(token)
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=60.0)
        self.left_out = Unaddressable()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.client.request(method, path, params=params, json=body, content=content)
        except httpx.HTTPError as exc:
            raise StorageError(
                f"cannot reach the statekeeper server at {redacted(self.url)}: {exc}; is it "
                "running, and is --server (STATEKEEPER_SERVER) right?"
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _view(self, shape: type[V], method: str, path: str, **kw: Any) -> V:
        """The answer, parsed into the view the API documents for it."""
        return _parse(TypeAdapter(shape), self._call(method, path, **kw))

    def _views(self, shape: type[V], method: str, path: str, **kw: Any) -> list[V]:
        """A listing's rows; the keys it left out (a header) noted in ``left_out``."""
        response = self._call(method, path, **kw)
        if UNADDRESSABLE_HEADER in response.headers:
            self.left_out.add_header(response.headers[UNADDRESSABLE_HEADER])
        return _parse(TypeAdapter(list[shape]), response)  # type: ignore[valid-type]

    def list_states(self, prefix: str, details: bool) -> list[views.StateEntry]:
        params = {"prefix": prefix, "details": str(details).lower()}
        return self._views(views.StateEntry, "GET", f"{API}/states", params=params)

    def show(self, name: StateName, version: str | None) -> views.StateDetail:
        params = {"version": version}
        return self._view(views.StateDetail, "GET", _path("states", name), params=params)

    def pull(self, name: StateName, version: str | None) -> bytes:
        return self._call("GET", _path("content", name), params={"version": version}).content

    def push(self, name: StateName, data: bytes, force: bool) -> views.PushResult:
        params = {"force": str(force).lower()}
        return self._view(
            views.PushResult, "PUT", _path("content", name), params=params, content=data
        )

    def history(self, name: StateName, limit: int | None) -> list[views.HistoryEntry]:
        params = {"limit": limit}
        return self._views(views.HistoryEntry, "GET", _path("versions", name), params=params)

    def diff(self, name: StateName, from_ref: str | None, to_ref: str | None) -> views.DiffView:
        params = {"from": from_ref, "to": to_ref}
        return self._view(views.DiffView, "GET", _path("diff", name), params=params)

    def rollback(self, name: StateName, to_ref: str) -> views.RollbackResult:
        body = {"to": to_ref}
        return self._view(views.RollbackResult, "POST", _path("rollback", name), body=body)

    def list_locks(self, prefix: str) -> list[views.LockEntry]:
        return self._views(views.LockEntry, "GET", f"{API}/locks", params={"prefix": prefix})

    def unlock(self, name: StateName, lock_id: str | None, force: bool) -> views.Release:
        params = {"id": lock_id, "force": str(force).lower()}
        return self._view(views.Release, "DELETE", _path("locks", name), params=params)

    def reap(
        self, older_than: str, operation: str | None, prefix: str, dry_run: bool
    ) -> list[views.Release]:
        body = {
            "older_than": older_than,
            "operation": operation,
            "prefix": prefix,
            "dry_run": dry_run,
        }
        return self._views(views.Release, "POST", f"{API}/reap", body=body)

    def search(self, query: str, limit: int) -> SearchResult:
        # The server reads it so too; a search no URL can carry (bytes that are no UTF-8)
        # is refused here with the server's words.
        parse_query(query)
        params = {"q": query, "limit": limit}
        return self._view(SearchResult, "GET", f"{API}/search", params=params)

    def inventory(self) -> InventoryCounts:
        return self._view(InventoryCounts, "GET", f"{API}/inventory")

    def unkept_digest(self, name: StateName) -> str | None:
        return None  # the server writes through its own lock tables, digests included

    def close(self) -> None:
        self.client.close()
