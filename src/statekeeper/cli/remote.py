"""The operator's operations through a running server's JSON API (``--server``).

Error answers (``{"error": code, "message": …}``) become the same exception
the server raised, so the CLI prints the same message and exits with the same
code as it would on a local store.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from statekeeper import errors
from statekeeper.errors import LockConflict, StatekeeperError, StorageError, Unauthenticated
from statekeeper.terraform.layout import LOCK_FIELDS
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName

__all__ = ["RemoteBackend", "error_from_response"]

API = "/api/v1"


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
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "error" not in body:
        return StatekeeperError(
            f"the server answered {response.status_code} to {response.request.method} "
            f"{response.request.url.path}: {response.text[:200]!r}"
        )
    code, message = str(body["error"]), str(body.get("message", ""))
    if code in ("locked", "lock_mismatch") and "ID" in body:
        holder = {k: body[k] for k in LOCK_FIELDS if k in body}
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


class RemoteBackend:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=60.0)

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
                f"cannot reach the statekeeper server at {self.url}: {exc}; is it running, "
                "and is --server (STATEKEEPER_SERVER) right?"
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self._call(method, path, **kw).json()

    def list_states(self, prefix: str, details: bool) -> list[dict[str, Any]]:
        params = {"prefix": prefix, "details": str(details).lower()}
        result: list[dict[str, Any]] = self._json("GET", f"{API}/states", params=params)
        return result

    def show(self, name: StateName, version: str | None) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "GET", _path("states", name), params={"version": version}
        )
        return result

    def pull(self, name: StateName, version: str | None) -> bytes:
        return self._call("GET", _path("content", name), params={"version": version}).content

    def push(self, name: StateName, data: bytes, force: bool) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "PUT", _path("content", name), params={"force": str(force).lower()}, content=data
        )
        return result

    def history(self, name: StateName, limit: int | None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json(
            "GET", _path("versions", name), params={"limit": limit}
        )
        return result

    def diff(self, name: StateName, from_ref: str | None, to_ref: str | None) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "GET", _path("diff", name), params={"from": from_ref, "to": to_ref}
        )
        return result

    def rollback(self, name: StateName, to_ref: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", _path("rollback", name), body={"to": to_ref})
        return result

    def list_locks(self, prefix: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"{API}/locks", params={"prefix": prefix})
        return result

    def unlock(self, name: StateName, lock_id: str | None, force: bool) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "DELETE", _path("locks", name), params={"id": lock_id, "force": str(force).lower()}
        )
        return result

    def reap(
        self, older_than: str, operation: str | None, prefix: str, dry_run: bool
    ) -> list[dict[str, Any]]:
        body = {
            "older_than": older_than,
            "operation": operation,
            "prefix": prefix,
            "dry_run": dry_run,
        }
        result: list[dict[str, Any]] = self._json("POST", f"{API}/reap", body=body)
        return result

    def close(self) -> None:
        self.client.close()
