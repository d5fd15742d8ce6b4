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
from statekeeper.state.diff import diff_states, readable_document
from statekeeper.state.inspection import Inspector
from statekeeper.state.version import StateVersion
from statekeeper.terraform.names import StateName

__all__ = ["MASK", "Resource", "TimelineEntry", "plain", "resources_of", "timeline"]

#: What a sensitive value is shown as.
MASK = "(sensitive)"

Path = tuple[str | int, ...]


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


def _step(raw: Any) -> str | int | None:
    if not isinstance(raw, dict):
        return None
    value = raw.get("value")
    if raw.get("type") == "get_attr" and isinstance(value, str):
        return value
    if raw.get("type") == "index":
        if isinstance(value, dict) and "value" in value:
            value = value["value"]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int | str) and not isinstance(value, bool):
            return value
    return None


def _marked(raw: Any) -> list[Path]:
    """The paths ``sensitive_attributes`` marks; an unreadable mark masks everything."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        return [()]
    paths: list[Path] = []
    for item in raw:
        steps = [_step(s) for s in item] if isinstance(item, list) else [None]
        if any(s is None for s in steps):
            return [()]
        paths.append(tuple(s for s in steps if s is not None))
    return paths


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in _leaves(v)]
    return [value]


class _Secrets:
    """The values a state marks sensitive anywhere. Marks are incomplete
    (``terraform_data`` copies its marked ``input`` to an unmarked ``output``), so a
    value equal to one, or a long enough string holding one, is masked too."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.strings: set[str] = set()

    def remember(self, value: Any) -> None:
        for leaf in _leaves(value):
            if leaf is None or isinstance(leaf, bool) or leaf == "":
                continue
            self.values.add(json.dumps(leaf))
            if isinstance(leaf, str) and len(leaf) >= 6:
                self.strings.add(leaf)

    def hides(self, scalar: Any) -> bool:
        if scalar is None or isinstance(scalar, bool) or scalar == "":
            return False
        if json.dumps(scalar) in self.values:
            return True
        return isinstance(scalar, str) and any(s in scalar for s in self.strings)


def _is_wrapper(value: Any) -> bool:
    """A dynamically typed value as Terraform stores it: ``{"value": V, "type": T}``."""
    return isinstance(value, dict) and set(value) == {"value", "type"}


def _marked_values(value: Any, at: Path, marked: list[Path], secrets: _Secrets) -> None:
    if any(m == at[: len(m)] for m in marked):
        # A dynamic value's type ("string") is not the secret; its value is.
        secrets.remember(value["value"] if _is_wrapper(value) else value)
    elif isinstance(value, dict):
        wrapped = _is_wrapper(value)
        for k, v in value.items():
            _marked_values(v, at if wrapped and k == "value" else (*at, k), marked, secrets)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _marked_values(v, (*at, i), marked, secrets)


def _mask(value: Any, at: Path, marked: list[Path], secrets: _Secrets) -> Any:
    if any(m == at[: len(m)] for m in marked):
        return MASK
    if isinstance(value, dict):
        # A dynamically typed attribute is stored as {"value": V, "type": T} and its
        # marks step over the wrapper: V is matched at the wrapper's own path.
        wrapped = _is_wrapper(value)
        out = {}
        for k, v in value.items():
            out[k] = _mask(v, at if wrapped and k == "value" else (*at, k), marked, secrets)
        return out
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
    secrets = _Secrets()
    for res in raw if isinstance(raw, list) else []:
        for inst in res.get("instances") or [] if isinstance(res, dict) else []:
            if isinstance(inst, dict):
                attrs = inst.get("attributes") or inst.get("attributes_flat") or {}
                _marked_values(attrs, (), _marked(inst.get("sensitive_attributes")), secrets)
    outputs = document.get("outputs")
    for o in outputs.values() if isinstance(outputs, dict) else []:
        if isinstance(o, dict) and o.get("sensitive"):
            secrets.remember(o.get("value"))
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
            masked = _mask(attrs, (), _marked(inst.get("sensitive_attributes")), secrets)
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
    inspector: Inspector, name: StateName, caller: Caller, limit: int
) -> tuple[list[TimelineEntry], int]:
    """The newest ``limit`` versions with what each added, changed and removed,
    and the number of versions in all."""
    versions = inspector.versions(name, caller)
    wanted = versions[: limit + 1]
    data = [inspector.pull(name, caller, v.version_id) if v.size else None for v in wanted]
    entries = []
    for i, v in enumerate(wanted[:limit]):
        newer = data[i]
        older = data[i + 1] if i + 1 < len(data) else None
        oldest = i + 1 >= len(versions)
        counts: tuple[int | None, int | None, int | None] = (None, None, None)
        if newer is not None and (older is not None or oldest):
            try:
                d = diff_states(older, newer)
                counts = (len(d.added), len(d.changed), len(d.removed))
            except (EncryptedState, BadRequest):
                pass  # counts unknown: an encrypted or unreadable version
        filled = inspector.filled(v, newer) if newer is not None else v
        entries.append(TimelineEntry(filled, *counts))
    return entries, len(versions)
