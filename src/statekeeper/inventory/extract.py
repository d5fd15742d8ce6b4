"""What the inventory keeps of one state: its facts and its resources' searchable text.

Attribute values are taken after masking with :mod:`statekeeper.state.sensitive`
(marked values and values holding a marked one are left out), so a secret is
never written to the index. Only scalars are kept, each cut to a length that
still holds an ARN, a bucket name or an ID, with a cap per resource.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from statekeeper.state.diff import secrets_of
from statekeeper.state.sensitive import Path, Secrets, locations
from statekeeper.terraform.statedoc import StateDoc

__all__ = ["IndexedResource", "IndexedState", "extract", "marker"]

#: Longest single value kept; longer ones (policies, certificates) are cut.
MAX_VALUE = 512
#: Searchable text kept per resource, over all its instances.
MAX_TEXT = 8192


@dataclass(frozen=True)
class IndexedResource:
    address: str
    mode: str
    type: str
    name: str
    module: str
    provider: str
    instances: int
    text: str


@dataclass
class IndexedState:
    serial: int | None = None
    lineage: str | None = None
    terraform_version: str | None = None
    encrypted: bool = False
    resources: list[IndexedResource] = field(default_factory=list)


def _values(value: Any, at: Path, marked: tuple[Path, ...], secrets: Secrets) -> Iterator[str]:
    if any(m == at[: len(m)] for m in marked):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _values(v, (*at, k), marked, secrets)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _values(v, (*at, i), marked, secrets)
    elif (
        isinstance(value, str | int | float)
        and not isinstance(value, bool)
        and value != ""
        and not secrets.hides(value)
    ):
        yield str(value)[:MAX_VALUE]


def _provider(raw: Any) -> str:
    # provider["registry.terraform.io/hashicorp/aws"] → registry.terraform.io/hashicorp/aws
    text = str(raw or "")
    return text.partition('["')[2].partition('"]')[0] or text


def extract(data: bytes) -> IndexedState:
    """The facts and resources of a state's bytes (an OpenTofu envelope: facts only)."""
    doc = StateDoc.parse(data)
    out = IndexedState(doc.serial, doc.lineage, doc.terraform_version, doc.encrypted)
    if doc.encrypted:
        return out
    document = doc.document  # parsed once: the facts' parse kept it
    secrets = secrets_of(document)
    raw = document.get("resources")
    for res in raw if isinstance(raw, list) else []:
        if not isinstance(res, dict):
            continue
        mode, rtype, name = (str(res.get(k, "")) for k in ("mode", "type", "name"))
        module = str(res.get("module") or "")
        parts = ([module] if module else []) + (["data"] if mode == "data" else [])
        address = ".".join([*parts, rtype, name])
        texts: list[str] = []
        size = 0
        instances = [i for i in res.get("instances") or [] if isinstance(i, dict)]
        for inst in instances:
            attrs = inst.get("attributes")
            if attrs is None:
                attrs = inst.get("attributes_flat") or {}
            marked = locations(attrs, inst.get("sensitive_attributes"))
            for text in _values(attrs, (), marked, secrets):
                if size + len(text) > MAX_TEXT:
                    break
                texts.append(text)
                size += len(text) + 1
        out.resources.append(
            IndexedResource(
                address=address,
                mode=mode,
                type=rtype,
                name=name,
                module=module,
                provider=_provider(res.get("provider")),
                instances=len(instances),
                text=" ".join(dict.fromkeys(texts)),
            )
        )
    return out


def marker(version_id: str, etag: str | None) -> str:
    """What tells the index a state changed: its ETag where the store has one (S3 lists
    it, while a listing carries no VersionId), else its version ID (SQLite's row)."""
    return etag or version_id
