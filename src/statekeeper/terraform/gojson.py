"""JSON as Terraform's Go decoder reads it, for every body statekeeper accepts.

Python's ``json`` is more lenient than Go's ``encoding/json`` in ways that let
through bytes Terraform then cannot load: ``json.loads`` on bytes also takes
UTF-16 and UTF-32 and drops a UTF-8 byte-order mark, and it reads ``NaN``,
``Infinity`` and ``-Infinity``. It also lets a lone UTF-16 surrogate escape
(``"\\ud800"``) become a string no store, log or answer can encode; Go reads
it as U+FFFD, so what Terraform sees would differ from what was stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["NotGoJson", "decode_text", "has_surrogate_escape", "is_text", "loads"]

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class NotGoJson(ValueError):
    """The bytes are not JSON Go's decoder reads; the message says what is wrong."""


def decode_text(data: bytes) -> str:
    """The body as text: strictly UTF-8, with no byte-order mark."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotGoJson(f"it is not UTF-8 text ({exc})") from exc
    if text.startswith("\ufeff"):
        raise NotGoJson("it starts with a byte-order mark; save it as UTF-8 without BOM")
    if "\x00" in text:
        # JSON never holds a raw NUL; UTF-16 and UTF-32 text is full of them.
        raise NotGoJson("it holds NUL bytes (UTF-16 or UTF-32 text?); send UTF-8 JSON")
    return text


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value (JSON has no NaN or Infinity)")


Hook = Callable[[list[tuple[str, Any]]], Any]


def loads(text: str, object_pairs_hook: Hook | None = None) -> Any:
    """``json.loads`` refusing NaN and Infinity; ValueError or RecursionError on bad JSON."""
    return json.loads(text, object_pairs_hook=object_pairs_hook, parse_constant=_no_constant)


def has_surrogate_escape(text: str) -> bool:
    """Whether the text may hold a surrogate escape: cheap, and false for what Terraform writes."""
    return _SURROGATE_ESCAPE.search(text) is not None


def is_text(value: Any) -> bool:
    """False when a string in ``value`` (keys included) holds a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(is_text(k) and is_text(v) for k, v in value.items())
    if isinstance(value, list):
        return all(is_text(v) for v in value)
    return True
