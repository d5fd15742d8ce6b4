"""Terraform workspaces in the ``backend "s3"`` layout .

The default workspace of ``key`` is the state ``key`` itself; workspace ``W``
is ``<prefix>/W/<key>`` with the ``workspace_key_prefix`` setting (``env:`` by
default), or ``W/<key>`` when the prefix is empty. State names are keys under
the store's own prefix, so these names match Terraform's keys exactly when the
store has no prefix; with ``s3://BUCKET/PREFIX`` Terraform keeps workspace
states outside PREFIX unless its ``workspace_key_prefix`` starts with PREFIX.
"""

from __future__ import annotations

from collections.abc import Iterable

from statekeeper.errors import BadRequest
from statekeeper.terraform.layout import DEFAULT_WORKSPACE_PREFIX
from statekeeper.terraform.names import StateName

__all__ = ["DEFAULT", "list_workspaces", "workspace_of", "workspace_state"]

DEFAULT = "default"


def _check_prefix(prefix: str) -> None:
    if prefix.startswith("/") or prefix.endswith("/"):
        raise BadRequest(
            f"workspace_key_prefix {prefix!r} must not start or end with '/' "
            "(Terraform refuses it too)"
        )


def workspace_state(
    key: str, workspace: str = DEFAULT, prefix: str = DEFAULT_WORKSPACE_PREFIX
) -> StateName:
    """The state name of ``workspace`` for the backend ``key``."""
    _check_prefix(prefix)
    if workspace in ("", DEFAULT):
        return StateName(key)
    if "/" in workspace:
        raise BadRequest(f"the workspace name {workspace!r} must not contain '/'")
    return StateName(f"{prefix}/{workspace}/{key}" if prefix else f"{workspace}/{key}")


def workspace_of(name: str, key: str, prefix: str = DEFAULT_WORKSPACE_PREFIX) -> str | None:
    """The workspace a state name belongs to for ``key``; None when it is not one of them.

    Mirrors Terraform's ``keyEnv``: ``key`` itself is ``default``; with a prefix,
    exactly ``<prefix>/W/<key>`` is ``W``; with prefix "" the name is split at
    its first '/' and the rest must equal ``key``.
    """
    _check_prefix(prefix)
    if name == key:
        return DEFAULT
    if prefix:
        head = prefix + "/"
        if not name.startswith(head):
            return None
        rest = name[len(head) :]
    else:
        rest = name
    workspace, sep, tail = rest.partition("/")
    if not sep or not workspace or tail != key:
        return None
    return workspace


def list_workspaces(
    names: Iterable[str], key: str, prefix: str = DEFAULT_WORKSPACE_PREFIX
) -> list[str]:
    """Terraform's ``Workspaces()`` over ``names`` (state names): ``default`` first
    (always), then the others sorted."""
    _check_prefix(prefix)
    found: set[str] = set()
    for name in names:
        workspace = workspace_of(name, key, prefix)
        if workspace is not None and workspace != DEFAULT:
            found.add(workspace)
    return [DEFAULT, *sorted(found)]
