"""What changed between two versions of a state, resource by resource.

Instances are matched by address (module, mode, type, name, index key, and
the deposed key of a deposed object); for each changed instance the attribute
paths that differ are listed. A value the state marks sensitive (an instance's
``sensitive_attributes``, see ``docs/protocol.md#sensitive-values``, or an output
with ``sensitive: true``), or one that holds a value marked sensitive elsewhere in
the state, is never shown: it comes out as ``None`` with ``sensitive`` set (the
rules are in :mod:`statekeeper.state.sensitive`). Terraform stores sensitive values
in clear text, so this masking is all that stands between the state and a terminal.

OpenTofu's encrypted states cannot be read without their key and are refused
with :class:`~statekeeper.errors.EncryptedState`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from statekeeper.errors import EncryptedState, InvalidState
from statekeeper.state.sensitive import Path, Secrets, locations, under
from statekeeper.state.views import (
    AttributeChange,
    BeforeAfter,
    InstanceChange,
    OutputChange,
    OutputValue,
    StateDiff,
)
from statekeeper.terraform.statedoc import StateDoc

__all__ = [
    "Instance",
    "StateContent",
    "attributes_of",
    "describe_state",
    "diff_states",
    "format_path",
    "instance_objects",
    "instances_of",
    "readable_document",
    "secrets_of",
    "status_of",
]

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


@dataclass(frozen=True)
class Instance:
    address: str
    attributes: Any
    #: Where its ``sensitive_attributes`` point, in the stored JSON.
    sensitive: tuple[Path, ...]
    status: str | None


def _index(key: Any) -> str:
    if key is None:
        return ""
    return f"[{json.dumps(key)}]"


def instance_objects(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every resource instance in a parsed state: its address and its JSON object."""
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
            yield address, inst


def attributes_of(inst: dict[str, Any]) -> Any:
    """An instance's attributes (``attributes_flat`` in states of Terraform 0.11)."""
    attrs = inst.get("attributes")
    if attrs is None and isinstance(inst.get("attributes_flat"), dict):
        attrs = inst["attributes_flat"]
    return attrs if attrs is not None else {}


def status_of(inst: dict[str, Any]) -> str | None:
    status = inst.get("status")
    return status if isinstance(status, str) else None


def instances_of(document: dict[str, Any]) -> dict[str, Instance]:
    """Every resource instance in a parsed state, by address."""
    out: dict[str, Instance] = {}
    for address, inst in instance_objects(document):
        attrs = attributes_of(inst)
        out[address] = Instance(
            address=address,
            attributes=attrs,
            sensitive=locations(attrs, inst.get("sensitive_attributes")),
            status=status_of(inst),
        )
    return out


def _root_outputs(document: dict[str, Any]) -> Any:
    if document.get("version") not in (1, 2, 3):
        return document.get("outputs")
    # Formats 1-3 keep them in the root module; format 1 as plain strings.
    modules = document.get("modules")
    for module in modules if isinstance(modules, list) else []:
        if isinstance(module, dict) and module.get("path") == ["root"]:
            return module.get("outputs")
    return None


def _outputs(document: dict[str, Any]) -> dict[str, tuple[Any, bool]]:
    raw = _root_outputs(document)
    out: dict[str, tuple[Any, bool]] = {}
    for name, o in (raw if isinstance(raw, dict) else {}).items():
        if isinstance(o, dict):
            out[str(name)] = (o.get("value"), bool(o.get("sensitive")))
        elif isinstance(o, str):
            out[str(name)] = (o, False)
    return out


def secrets_of(*documents: dict[str, Any]) -> Secrets:
    """Every value the documents mark sensitive, in instances and outputs alike."""
    secrets = Secrets()
    for document in documents:
        for inst in instances_of(document).values():
            secrets.remember_at(inst.attributes, inst.sensitive)
        for value, sensitive in _outputs(document).values():
            if sensitive:
                secrets.remember(value)
    return secrets


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


def _attribute_change(path: Path, before: Any, after: Any, sensitive: bool) -> AttributeChange:
    if sensitive:
        return AttributeChange(path=format_path(path), sensitive=True)
    return AttributeChange(path=format_path(path), before=before, after=after, sensitive=False)


def _instance_change(old: Instance, new: Instance, secrets: Secrets) -> InstanceChange | None:
    marked = old.sensitive + new.sensitive
    changes = []
    for p in _changed_paths(old.attributes, new.attributes):
        before, after = _lookup(old.attributes, p), _lookup(new.attributes, p)
        sensitive = under(p, marked) or secrets.hides(before) or secrets.hides(after)
        changes.append(_attribute_change(p, before, after, sensitive))
    if old.status != new.status:
        changes.append(
            AttributeChange(path="(status)", before=old.status, after=new.status, sensitive=False)
        )
    return InstanceChange(address=new.address, changes=changes) if changes else None


def _output_change(
    name: str, action: str, before: Any, after: Any, sensitive: bool
) -> OutputChange:
    if sensitive:
        return OutputChange(name=name, action=action, sensitive=True)
    return OutputChange(name=name, action=action, before=before, after=after, sensitive=False)


def _output_changes(
    old: dict[str, Any], new: dict[str, Any], secrets: Secrets
) -> Iterator[OutputChange]:
    before, after = _outputs(old), _outputs(new)
    for name in sorted(set(before) | set(after)):
        b, a = before.get(name), after.get(name)
        b_value, a_value = (b or (None, False))[0], (a or (None, False))[0]
        sensitive = bool((b and b[1]) or (a and a[1]))
        sensitive = sensitive or secrets.hides(b_value) or secrets.hides(a_value)
        if b is None and a is not None:
            yield _output_change(name, "added", None, a_value, sensitive)
        elif a is None and b is not None:
            yield _output_change(name, "removed", b_value, None, sensitive)
        elif a is not None and b is not None and a != b:
            yield _output_change(name, "changed", b_value, a_value, sensitive)


def diff_states(old: bytes | None, new: bytes) -> StateDiff:
    """The resource-level difference from ``old`` (None: no state) to ``new``."""
    before = readable_document(old, "the older version") if old is not None else {}
    after = readable_document(new, "the newer version")
    old_i, new_i = instances_of(before), instances_of(after)
    # A value sensitive on either side is sensitive on both: a rotated password
    # is marked in the version that has it.
    secrets = secrets_of(before, after)
    changed = [
        c
        for addr in sorted(set(old_i) & set(new_i))
        if (c := _instance_change(old_i[addr], new_i[addr], secrets)) is not None
    ]
    added, removed = sorted(set(new_i) - set(old_i)), sorted(set(old_i) - set(new_i))
    return StateDiff(
        serial=BeforeAfter(before=before.get("serial"), after=after.get("serial")),
        lineage=BeforeAfter(before=before.get("lineage"), after=after.get("lineage")),
        resources_changed=len(added) + len(removed) + len(changed),
        added=added,
        removed=removed,
        changed=changed,
        outputs=list(_output_changes(before, after, secrets)),
    )


@dataclass(frozen=True)
class StateContent:
    """What ``show`` tells of one version's content: resources and masked outputs."""

    encrypted: bool
    terraform_version: str | None = None
    #: None when the content is encrypted (OpenTofu) and cannot be read.
    resources: list[str] | None = None
    outputs: dict[str, OutputValue] | None = None


def describe_state(data: bytes) -> StateContent:
    """Resources and outputs of one version, sensitive output values masked."""
    doc = StateDoc.parse(data)
    if doc.encrypted:
        return StateContent(encrypted=True)
    secrets = secrets_of(doc.document)
    outputs = {}
    for name, (value, sensitive) in sorted(_outputs(doc.document).items()):
        if sensitive or secrets.hides(value):
            outputs[name] = OutputValue(sensitive=True)
        else:
            outputs[name] = OutputValue(value=value, sensitive=False)
    return StateContent(
        encrypted=False,
        terraform_version=doc.terraform_version,
        resources=sorted(instances_of(doc.document)),
        outputs=outputs,
    )
