"""Regular expressions the OpenAPI document publishes as JSON Schema ``pattern``s.

Each rule's module builds its pattern from the constants its own check uses,
so the document cannot drift from the check (``tests/server/test_openapi_rules.py``
holds each against the check over a table of examples). A JSON Schema pattern is
ECMA-262, searched, not matched; these are written in what ECMA-262 and Python's
``re`` (schemathesis and hypothesis generate with it) read alike:

- the end of the text is :data:`END`, not ``$``: Python's ``$`` also matches
  before a final newline, so a generator sends ``team/app\\n`` as valid;
- a literal escapes only ECMA-262's syntax characters (:func:`literal`): with
  the ``u`` flag JSON Schema validators use, ``\\-`` outside a class is an error;
- letters in either case are a class per letter (:func:`any_case`): ECMA-262
  has no inline ``(?i)``.
"""

from __future__ import annotations

import re

__all__ = ["END", "any_case", "literal", "whole"]

#: The end of the text, in ECMA-262 and in Python alike.
END = r"(?![\s\S])"
_SYNTAX = re.compile(r"[\\^$.*+?()\[\]{}|/]")


def whole(body: str) -> str:
    """A pattern the whole text must match (a JSON Schema pattern is searched)."""
    return f"^(?:{body}){END}"


def literal(text: str) -> str:
    """``text`` matched as it is."""
    return _SYNTAX.sub(lambda m: "\\" + m.group(), text)


def any_case(text: str) -> str:
    """``text`` matched in any case (what the check compares after ``lower()``)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else literal(c) for c in text)
