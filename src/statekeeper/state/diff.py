"""What changed between two versions of a state, resource by resource.

Instances are matched by address (module, mode, type, name, index key, and
the deposed key of a deposed object); for each changed instance the attribute
paths that differ are listed. Values under a path the state marks sensitive
(an instance's ``sensitive_attributes``, see ``docs/protocol.md#sensitive-values``,
or an output with ``sensitive: true``) are never shown: they come out as
``None`` with ``sensitive`` set. Terraform stores sensitive values in clear text, so this
masking is the only thing standing between the state and a terminal.

OpenTofu's encrypted states cannot be read without their key and are refused
with :class:`~statekeeper.errors.EncryptedState`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from statekeeper.errors import EncryptedState, InvalidState
from statekeeper.terraform.statedoc import StateDoc

__all__ = [
    "AttributeChange",
    "InstanceChange",
    "OutputChange",
    "StateDiff",
    "describe_state",
    "diff_states",
    "format_path",
    "instances_of",
    "readable_document",
]

Path = tuple[str | int, ...]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def format_path(path: Path) -> str:
    """``tags["Name"]``, ``list[0].x``: Terraform's own way of writing a path."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif _IDENT.fullmatch(step):
            out += f".{step}" if out else step
        else:
            out += f"[{json.dumps(step)}]"
    return out


def readable_document(data: bytes, what: str = "this state") -> dict[str, Any]:
    """The parsed state, or EncryptedState for an OpenTofu envelope."""
    doc = StateDoc.parse(data)
    if doc.encrypted:
        raise EncryptedState(
            f"{what} is encrypted by OpenTofu (client-side state encryption); its "
            "resources and outputs cannot be read or diffed without the key. Use "
            "'tofu show' with the encryption configured instead."
        )
    return doc.document


def _step(raw: Any) -> str | int | None:
    if not isinstance(raw, dict):
        return None
    value = raw.get("value")
    if raw.get("type") == "get_attr" and isinstance(value, str):
        return value
    if raw.get("type") == "index":
        # The index is cty's dynamic JSON, {"value": 0, "type": "number"}; a bare value is
        # accepted too, as older writers may have produced it.
        if isinstance(value, dict) and "value" in value:
            value = value["value"]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int | str) and not isinstance(value, bool):
            return value
    return None


def _sensitive_paths(raw: Any) -> list[Path]:
    paths: list[Path] = []
    for item in raw if isinstance(raw, list) else []:
        steps = [_step(s) for s in item] if isinstance(item, list) else [None]
        if all(s is not None for s in steps):
            paths.append(tuple(s for s in steps if s is not None))
        else:
            paths.append(())  # an unreadable path: treat the whole object as sensitive
    return paths


@dataclass(frozen=True)
class Instance:
    address: str
    attributes: Any
    sensitive: tuple[Path, ...]
    status: str | None


def _index(key: Any) -> str:
    if key is None:
        return ""
    return f"[{json.dumps(key)}]"


def instances_of(document: dict[str, Any]) -> dict[str, Instance]:
    """Every resource instance in a parsed state, by address."""
    out: dict[str, Instance] = {}
    resources = document.get("resources")
    for res in resources if isinstance(resources, list) else []:
        if not isinstance(res, dict):
            raise InvalidState("the state has a resource that is not a JSON object")
        parts = [str(res["module"])] if res.get("module") else []
        if res.get("mode") == "data":
            parts.append("data")
        parts += [str(res.get("type", "?")), str(res.get("name", "?"))]
        base = ".".join(parts)
        instances = res.get("instances")
        for inst in instances if isinstance(instances, list) else []:
            if not isinstance(inst, dict):
                continue
            address = base + _index(inst.get("index_key"))
            if inst.get("deposed"):
                address += f" (deposed {inst['deposed']})"
            attrs = inst.get("attributes")
            if attrs is None and isinstance(inst.get("attributes_flat"), dict):
                attrs = inst["attributes_flat"]
            out[address] = Instance(
                address=address,
                attributes=attrs if attrs is not None else {},
                sensitive=tuple(_sensitive_paths(inst.get("sensitive_attributes"))),
                status=inst.get("status") if isinstance(inst.get("status"), str) else None,
            )
    return out


def _outputs(document: dict[str, Any]) -> dict[str, tuple[Any, bool]]:
    raw = document.get("outputs")
    out: dict[str, tuple[Any, bool]] = {}
    for name, o in (raw if isinstance(raw, dict) else {}).items():
        if isinstance(o, dict):
            out[str(name)] = (o.get("value"), bool(o.get("sensitive")))
    return out


def _is_sensitive(path: Path, sensitive: tuple[Path, ...]) -> bool:
    # A value under a sensitive path, or a container holding one, is masked.
    for s in sensitive:
        n = min(len(s), len(path))
        if s[:n] == path[:n]:
            return True
    return False


def _changed_paths(before: Any, after: Any, path: Path = ()) -> Iterator[Path]:
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            if key not in before or key not in after:
                yield (*path, str(key))
            else:
                yield from _changed_paths(before[key], after[key], (*path, str(key)))
        return
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            yield from _changed_paths(b, a, (*path, i))
        return
    yield path


def _lookup(value: Any, path: Path) -> Any:
    for step in path:
        if isinstance(value, dict) and isinstance(step, str):
            value = value.get(step)
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            value = value[step]
        else:
            return None
    return value


@dataclass(frozen=True)
class AttributeChange:
    path: str
    before: Any
    after: Any
    sensitive: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "before": None if self.sensitive else self.before,
            "after": None if self.sensitive else self.after,
            "sensitive": self.sensitive,
        }


@dataclass(frozen=True)
class InstanceChange:
    address: str
    changes: tuple[AttributeChange, ...]

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "changes": [c.to_json() for c in self.changes]}


@dataclass(frozen=True)
class OutputChange:
    name: str
    action: str  # added, removed, changed
    before: Any
    after: Any
    sensitive: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.action,
            "before": None if self.sensitive else self.before,
            "after": None if self.sensitive else self.after,
            "sensitive": self.sensitive,
        }


@dataclass(frozen=True)
class StateDiff:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[InstanceChange, ...] = ()
    outputs: tuple[OutputChange, ...] = ()
    #: The serial, lineage and Terraform version of each side.
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def resources_changed(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)

    @property
    def empty(self) -> bool:
        return not (self.resources_changed or self.outputs)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.header,
            "resources_changed": self.resources_changed,
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": [c.to_json() for c in self.changed],
            "outputs": [o.to_json() for o in self.outputs],
        }


def _instance_change(old: Instance, new: Instance) -> InstanceChange | None:
    sensitive = old.sensitive + new.sensitive
    changes = [
        AttributeChange(
            path=format_path(p),
            before=_lookup(old.attributes, p),
            after=_lookup(new.attributes, p),
            sensitive=_is_sensitive(p, sensitive),
        )
        for p in _changed_paths(old.attributes, new.attributes)
    ]
    if old.status != new.status:
        changes.append(AttributeChange("(status)", old.status, new.status, False))
    return InstanceChange(new.address, tuple(changes)) if changes else None


def _output_changes(old: dict[str, Any], new: dict[str, Any]) -> Iterator[OutputChange]:
    before, after = _outputs(old), _outputs(new)
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        sensitive = bool((b and b[1]) or (a and a[1]))
        if b is None and a is not None:
            yield OutputChange(name, "added", None, a[0], sensitive)
        elif a is None and b is not None:
            yield OutputChange(name, "removed", b[0], None, sensitive)
        elif a is not None and b is not None and a != b:
            yield OutputChange(name, "changed", b[0], a[0], sensitive)


def diff_states(old: bytes | None, new: bytes) -> StateDiff:
    """The resource-level difference from ``old`` (None: no state) to ``new``."""
    before = readable_document(old, "the older version") if old is not None else {}
    after = readable_document(new, "the newer version")
    old_i, new_i = instances_of(before), instances_of(after)
    changed = [
        c
        for addr in sorted(set(old_i) & set(new_i))
        if (c := _instance_change(old_i[addr], new_i[addr])) is not None
    ]
    return StateDiff(
        added=tuple(sorted(set(new_i) - set(old_i))),
        removed=tuple(sorted(set(old_i) - set(new_i))),
        changed=tuple(changed),
        outputs=tuple(_output_changes(before, after)),
        header={
            "serial": {"before": before.get("serial"), "after": after.get("serial")},
            "lineage": {"before": before.get("lineage"), "after": after.get("lineage")},
        },
    )


def describe_state(data: bytes) -> dict[str, Any]:
    """Resources and outputs of one version, sensitive output values masked."""
    doc = StateDoc.parse(data)
    if doc.encrypted:
        return {"encrypted": True, "resources": None, "outputs": None}
    outputs = {
        name: {"value": None if sensitive else value, "sensitive": sensitive}
        for name, (value, sensitive) in sorted(_outputs(doc.document).items())
    }
    return {
        "encrypted": False,
        "terraform_version": doc.terraform_version,
        "resources": sorted(instances_of(doc.document)),
        "outputs": outputs,
    }
