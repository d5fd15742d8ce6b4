"""The search box's grammar: free words, quoted phrases and ``field:value`` filters.

``bucket logs`` finds resources whose address, type, module, provider or
attribute values hold both words; ``"arn:aws:s3:::logs"`` a phrase;
``type:aws_s3_bucket``, ``provider:aws``, ``module:module.net``,
``name:main``, ``state:team/**`` and ``terraform:1.5`` filter. A word ending
in ``*`` matches as a prefix.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from statekeeper.errors import BadRequest

__all__ = ["FIELDS", "Query", "parse_query"]

FIELDS = ("type", "provider", "module", "name", "state", "terraform", "mode")
_ALIASES = {"tf": "terraform", "resource": "type"}
_TOKEN = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Query:
    #: FTS5 MATCH expression over the text columns; "" when only filters were given.
    match: str = ""
    filters: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.match and not self.filters


def _phrase(term: str) -> str | None:
    """An FTS5 phrase for one user term, tokenised as the index is (so punctuation
    in an ARN or a bucket name separates tokens on both sides)."""
    prefix = term.endswith("*")
    tokens = _TOKEN.findall(term)
    if not tokens:
        return None
    text = '"' + " ".join(tokens) + '"'
    return text + "*" if prefix else text


def parse_query(text: str) -> Query:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise BadRequest(f"the search {text!r} has an unclosed quote") from exc
    phrases: list[str] = []
    filters: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition(":")
        key = _ALIASES.get(key.lower(), key.lower())
        if sep and key in FIELDS and value:
            filters[key] = value
            continue
        phrase = _phrase(word)
        if phrase is not None:
            phrases.append(phrase)
    return Query(" AND ".join(phrases), filters)
