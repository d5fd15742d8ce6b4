"""The outputs-only view of a state: what ``terraform_remote_state`` reads, and nothing else.

A caller with the ``outputs`` permission gets this view instead of the
state. It is built by allow-list, key by key, for every state format
Terraform still reads (it upgrades formats 1-3 to 4 on read), so a key this
module does not know (a new top-level key, a resource under ``modules[]``,
a ``backend`` block with credentials in it) can never pass through.

What Terraform needs of each format to read the root module's outputs:

- format 4: ``version``, ``terraform_version``, ``serial``, ``lineage`` and
  ``outputs``, each output ``{"value", "type", "sensitive"}``; ``resources``
  is kept as an empty list, the shape Terraform itself writes for no resources.
- formats 2 and 3: the same top-level facts, and ``modules`` holding only the
  root module (``"path": ["root"]``) with its ``outputs``, each
  ``{"sensitive", "type", "value"}``, and empty ``resources``.
- format 1: ``version``, ``serial`` and the root module, whose outputs are
  plain strings (format 1 had neither lineage nor typed outputs).

A sensitive output keeps its value and its ``sensitive`` flag: Terraform
needs the value, and marks it sensitive again from the flag.
"""

from __future__ import annotations

import json
from typing import Any

from statekeeper.errors import InvalidState

__all__ = ["outputs_only"]

_TOP_V4 = ("version", "terraform_version", "serial", "lineage")
_TOP_V2 = ("version", "terraform_version", "serial", "lineage")
_TOP_V1 = ("version", "serial")
_OUTPUT_V4 = ("value", "type", "sensitive")
_OUTPUT_V2 = ("sensitive", "type", "value")
_ROOT = ["root"]


def _pick(source: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: source[k] for k in keys if k in source}


def _typed_outputs(raw: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    return {str(n): _pick(o, keys) for n, o in raw.items() if isinstance(o, dict)}


def _string_outputs(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    return {str(n): v for n, v in raw.items() if isinstance(v, str)}


def _root_modules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    modules = doc.get("modules")
    found = [m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []
    return [m for m in found if m.get("path") == _ROOT]


def _view(doc: dict[str, Any]) -> dict[str, Any]:
    version = doc.get("version")
    if version == 4:
        return {
            **_pick(doc, _TOP_V4),
            "outputs": _typed_outputs(doc.get("outputs"), _OUTPUT_V4),
            "resources": [],
        }
    if version in (2, 3):
        modules = [
            {
                "path": _ROOT,
                "outputs": _typed_outputs(m.get("outputs"), _OUTPUT_V2),
                "resources": {},
            }
            for m in _root_modules(doc)
        ]
        return {**_pick(doc, _TOP_V2), "modules": modules}
    if version == 1:
        modules = [
            {"path": _ROOT, "outputs": _string_outputs(m.get("outputs")), "resources": {}}
            for m in _root_modules(doc)
        ]
        return {**_pick(doc, _TOP_V1), "modules": modules}
    raise InvalidState(f"no outputs-only view of a state in format version {version!r}")


def outputs_only(data: bytes) -> bytes:
    """The outputs-only view of ``data``, a Terraform state (not an encrypted envelope)."""
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise InvalidState("the state must be a JSON object")
    return (json.dumps(_view(doc), indent=2) + "\n").encode()
