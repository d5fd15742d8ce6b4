"""What the state pages show beyond the operator's answers: the resources table
with masked attribute views, and the versions timeline with per-version counts.

Everything is read through the services with the caller's permissions: an
outputs-only caller's bytes have no resources, and the timeline needs ``read``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from statekeeper.errors import BadRequest, EncryptedState
from statekeeper.security.caller import Caller
from statekeeper.state.diff import diff_states, readable_document, secrets_of
from statekeeper.state.inspection import Inspector
from statekeeper.state.reads import CurrentState
from statekeeper.state.sensitive import Path, Secrets, locations
from statekeeper.state.version import StateVersion
from statekeeper.terraform.names import StateName

__all__ = ["MASK", "Resource", "TimelineEntry", "plain", "resources_of", "timeline"]

#: What a sensitive value is shown as.
MASK = "(sensitive)"


def plain(value: Any) -> dict[str, Any]:
    """A JSON document from the operator, whether a dict or a typed view."""
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        out: dict[str, Any] = dump(mode="json", by_alias=True)
        return out
    assert isinstance(value, dict)
    return value


@dataclass
class Instance:
    address: str
    #: (attribute, JSON text) with sensitive values replaced by MASK.
    attributes: list[tuple[str, str]]
    status: str | None = None


@dataclass
class Resource:
    mode: str
    type: str
    name: str
    module: str
    provider: str
    instances: list[Instance] = field(default_factory=list)

    @property
    def address(self) -> str:
        parts = [self.module] if self.module else []
        parts += ["data"] if self.mode == "data" else []
        return ".".join([*parts, self.type, self.name])


def _mask(value: Any, at: Path, marked: tuple[Path, ...], secrets: Secrets) -> Any:
    """``value`` with what is marked sensitive, or holds a marked value, replaced by MASK;
    the rest of a container stays readable."""
    if any(m == at[: len(m)] for m in marked):
        return MASK
    if isinstance(value, dict):
        return {k: _mask(v, (*at, k), marked, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, (*at, i), marked, secrets) for i, v in enumerate(value)]
    return MASK if secrets.hides(value) else value


def _index(key: Any) -> str:
    return "" if key is None else f"[{json.dumps(key)}]"


def _provider(raw: Any) -> str:
    # provider["registry.terraform.io/hashicorp/aws"] reads better as hashicorp/aws.
    text = str(raw or "")
    inner = text.partition('["')[2].partition('"]')[0]
    return inner.removeprefix("registry.terraform.io/") or text


def resources_of(data: bytes) -> list[Resource]:
    """The resources of a state's bytes, attribute values masked where marked sensitive."""
    document = readable_document(data)
    raw = document.get("resources")
    secrets = secrets_of(document)
    out: list[Resource] = []
    for res in raw if isinstance(raw, list) else []:
        if not isinstance(res, dict):
            continue
        resource = Resource(
            mode=str(res.get("mode", "managed")),
            type=str(res.get("type", "?")),
            name=str(res.get("name", "?")),
            module=str(res.get("module") or ""),
            provider=_provider(res.get("provider")),
        )
        instances = res.get("instances")
        for inst in instances if isinstance(instances, list) else []:
            if not isinstance(inst, dict):
                continue
            attrs = inst.get("attributes")
            if attrs is None:
                attrs = inst.get("attributes_flat") or {}
            marked = locations(attrs, inst.get("sensitive_attributes"))
            masked = _mask(attrs, (), marked, secrets)
            address = resource.address + _index(inst.get("index_key"))
            if inst.get("deposed"):
                address += f" (deposed {inst['deposed']})"
            rows = [
                (str(k), v if v == MASK else json.dumps(v, indent=1, sort_keys=True))
                for k, v in (masked.items() if isinstance(masked, dict) else [])
            ]
            status = inst.get("status")
            resource.instances.append(
                Instance(address, rows, status if isinstance(status, str) else None)
            )
        out.append(resource)
    return out


@dataclass(frozen=True)
class TimelineEntry:
    version: StateVersion
    added: int | None
    changed: int | None
    removed: int | None


def timeline(
    inspector: Inspector, name: StateName, caller: Caller, limit: int, shown: CurrentState
) -> tuple[list[TimelineEntry], int]:
    """The newest ``limit`` versions with what each added, changed and removed,
    and the number of versions in all. ``shown``: the version the page shows, read
    already (not read again)."""
    versions = inspector.versions(name, caller)
    # The newest limit + 1 versions still there, with their bytes: one pruned or
    # compacted since the listing is no longer history (StateReads.read_listed).
    wanted: list[tuple[StateVersion, bytes | None]] = []
    gone = 0
    for v in versions:
        if len(wanted) > limit:
            break
        if not v.size:
            wanted.append((v, None))
        elif v.version_id == shown.version.version_id:
            wanted.append((v, shown.data))
        elif (got := inspector.states.read_listed(name, caller, v.version_id)) is not None:
            wanted.append((v, got.data))
        else:
            gone += 1
    entries = []
    for i, (v, newer) in enumerate(wanted[:limit]):
        older = wanted[i + 1][1] if i + 1 < len(wanted) else None
        oldest = i + 1 + gone >= len(versions)
        counts: tuple[int | None, int | None, int | None] = (None, None, None)
        if newer is not None and (older is not None or oldest):
            try:
                d = diff_states(older, newer)
                counts = (len(d.added), len(d.changed), len(d.removed))
            except (EncryptedState, BadRequest):
                pass  # counts unknown: an encrypted or unreadable version
        filled = inspector.filled(v, newer) if newer is not None else v
        entries.append(TimelineEntry(filled, *counts))
    return entries, len(versions) - gone
