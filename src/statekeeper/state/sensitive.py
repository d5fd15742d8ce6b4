"""What a state says is sensitive, and the one test every view applies before showing a value.

Terraform stores sensitive values in clear text; the state only *marks* them:

- an output with ``"sensitive": true``;
- an instance's ``sensitive_attributes``: a list of paths, each a list of
  steps ``{"type": "get_attr", "value": NAME}`` or ``{"type": "index",
  "value": {"value": KEY, "type": T}}`` (the key in cty's typed JSON).

A path is written against the attribute's *type*, not against its JSON: an
attribute of dynamic type (``terraform_data``'s ``input`` and ``output``) is
stored as ``{"value": …, "type": …}`` and the path steps over the wrapper, so
``[input, password]`` names ``attributes.input.value.password``. Paths are
resolved here into locations in the stored JSON, through every such wrapper.

The marks are incomplete: ``terraform_data`` copies its ``input`` to
``output`` without the mark, and an unmarked output can repeat a marked
value. So a value is also masked when it holds a value known to be sensitive
anywhere in the state (equal to it, or, for strings long enough not to match
by accident, containing it). Masking too much costs a ``(sensitive)`` on the
screen; masking too little prints a password.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Path", "Secrets", "locations", "under"]

#: A location in the stored JSON: object keys and array indices.
Path = tuple[str | int, ...]

# A step that cannot be located in JSON (a set element named by its value, a
# malformed step): everything from there on is masked.
_ANY = object()

_TYPE_WORDS = {"string", "number", "bool", "dynamic"}
_TYPE_KINDS = {"list", "set", "map", "object", "tuple"}

#: Shorter secrets are masked where equal, not searched for inside other strings.
MIN_CONTAINED = 6


def _is_type(t: Any) -> bool:
    if isinstance(t, str):
        return t in _TYPE_WORDS
    return isinstance(t, list) and len(t) >= 2 and t[0] in _TYPE_KINDS


def is_dynamic(node: Any) -> bool:
    """A dynamically typed value as Terraform stores it: ``{"value": V, "type": T}``."""
    return isinstance(node, dict) and set(node) == {"value", "type"} and _is_type(node["type"])


def _step(raw: Any) -> str | int | object:
    if not isinstance(raw, dict):
        return _ANY
    value = raw.get("value")
    if raw.get("type") == "get_attr" and isinstance(value, str):
        return value
    if raw.get("type") == "index":
        # cty's typed JSON {"value": 0, "type": "number"}; a bare key is accepted too.
        if isinstance(value, dict) and "value" in value:
            value = value["value"]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int | str) and not isinstance(value, bool):
            return value
    return _ANY


def _walk(node: Any, steps: list[str | int | object], at: Path) -> Iterator[Path]:
    if is_dynamic(node):
        # Through the wrapper; the literal reading below also stands, in case an
        # object merely has attributes named value and type.
        yield from _walk(node["value"], steps, (*at, "value"))
    if not steps:
        yield at
        return
    step, rest = steps[0], steps[1:]
    if step is _ANY:
        yield at
    elif isinstance(node, dict) and isinstance(step, str | int) and str(step) in node:
        yield from _walk(node[str(step)], rest, (*at, str(step)))
    elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        yield from _walk(node[step], rest, (*at, step))
    elif isinstance(node, list):
        # A set element is named by its value, not its position: mask the set.
        yield at
    else:
        # Not in this document (null, or absent): where it would be, so that the
        # other side of a diff is masked there too.
        tail = tuple(s for s in steps if isinstance(s, str | int))
        yield (*at, *tail) if len(tail) == len(steps) else at


def locations(attributes: Any, sensitive_attributes: Any) -> tuple[Path, ...]:
    """The locations in ``attributes`` that ``sensitive_attributes`` marks.

    Anything unreadable in the marks masks the whole instance: a state we
    cannot read the marks of is not one we may show values of.
    """
    if sensitive_attributes is None:
        return ()
    if not isinstance(sensitive_attributes, list):
        return ((),)
    found: list[Path] = []
    for raw in sensitive_attributes:
        steps = [_step(s) for s in raw] if isinstance(raw, list) else [_ANY]
        found.extend(_walk(attributes, steps, ()))
    return tuple(dict.fromkeys(found))


def under(path: Path, marked: Iterable[Path]) -> bool:
    """``path`` is at, inside, or holds one of the ``marked`` locations."""
    for m in marked:
        n = min(len(m), len(path))
        if m[:n] == path[:n]:
            return True
    return False


def _lookup(value: Any, path: Path) -> tuple[bool, Any]:
    for step in path:
        if isinstance(value, dict):
            found = isinstance(step, str) and step in value
        else:
            found = isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value)
        if not found:
            return False, None
        value = value[step]
    return True, value


def leaves(value: Any) -> Iterator[Any]:
    """The scalars inside ``value`` (itself, if it is one)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v)
    else:
        yield value


def _key(scalar: Any) -> str | None:
    """How a secret scalar is remembered; None for what cannot be one (null, bools, "")."""
    if scalar is None or isinstance(scalar, bool) or scalar == "":
        return None
    if isinstance(scalar, int | float | str):
        return json.dumps(scalar)
    return None


@dataclass
class Secrets:
    """The values one or more state documents mark as sensitive."""

    keys: set[str] = field(default_factory=set)
    strings: set[str] = field(default_factory=set)

    def remember(self, value: Any) -> None:
        for scalar in leaves(value):
            key = _key(scalar)
            if key is not None:
                self.keys.add(key)
                if isinstance(scalar, str) and len(scalar) >= MIN_CONTAINED:
                    self.strings.add(scalar)

    def remember_at(self, attributes: Any, marked: Iterable[Path]) -> None:
        for path in marked:
            found, value = _lookup(attributes, path)
            if found:
                self.remember(value)

    def hides(self, value: Any) -> bool:
        """``value`` holds a known secret, so showing it would show the secret."""
        if not self.keys:
            return False
        for scalar in leaves(value):
            key = _key(scalar)
            if key is None:
                continue
            if key in self.keys:
                return True
            if isinstance(scalar, str) and any(s in scalar for s in self.strings):
                return True
        return False
