"""Terraform-shaped state documents for tests that do not need Terraform itself.

The layout follows ``docs/protocol.md#state-format`` (format 4, 2-space indent,
Terraform's key order), so byte-for-byte comparisons mean what they would on a
real file.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["instance", "state_bytes"]


def instance(
    rtype: str,
    name: str,
    attributes: dict[str, Any],
    *,
    sensitive: list[list[dict[str, Any]]] | None = None,
    index_key: int | str | None = None,
    module: str | None = None,
) -> dict[str, Any]:
    """A resource with one instance, ready for ``state_bytes(resources=[...])``."""
    inst: dict[str, Any] = {}
    if index_key is not None:
        inst["index_key"] = index_key
    inst |= {
        "schema_version": 0,
        "attributes": attributes,
        "sensitive_attributes": sensitive or [],
        "identity_schema_version": 0,
    }
    res: dict[str, Any] = {"module": module} if module else {}
    res |= {
        "mode": "managed",
        "type": rtype,
        "name": name,
        "provider": 'provider["terraform.io/builtin/terraform"]',
        "instances": [inst],
    }
    return res


def state_bytes(
    serial: int,
    lineage: str = "5b2a8c3e-0000-4000-8000-000000000001",
    *,
    resources: list[dict[str, Any]] | None = None,
    outputs: dict[str, Any] | None = None,
) -> bytes:
    doc = {
        "version": 4,
        "terraform_version": "1.15.0",
        "serial": serial,
        "lineage": lineage,
        "outputs": outputs or {},
        "resources": resources or [],
        "check_results": None,
    }
    return (json.dumps(doc, indent=2) + "\n").encode()
