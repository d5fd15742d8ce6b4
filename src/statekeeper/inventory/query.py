"""The search box's grammar: free words, quoted phrases and ``field:value`` filters.

``bucket logs`` finds resources whose address, type, module, provider or
attribute values hold both words; ``"arn:aws:s3:::logs"`` a phrase;
``type:aws_s3_bucket``, ``provider:aws``, ``module:module.net``,
``name:main``, ``state:team/**`` and ``terraform:1.5`` filter. A word ending
in ``*`` matches as a prefix. Every word, phrase and filter must match, a filter
given twice too (``state:team/** state:**/prod.tfstate``: the prod states under
``team/``). A filter without a value, or a search longer than
:data:`MAX_QUERY` characters, is refused.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from statekeeper.errors import BadRequest

__all__ = ["FIELDS", "MAX_QUERY", "Query", "parse_query"]

FIELDS = ("type", "provider", "module", "name", "state", "terraform", "mode")
_ALIASES = {"tf": "terraform", "resource": "type"}
_EXAMPLES = {
    "type": "aws_s3_bucket",
    "provider": "aws",
    "module": "module.net",
    "name": "main",
    "state": "team/**",
    "terraform": "1.5",
    "mode": "data",
}
_TOKEN = re.compile(r"\w+", re.UNICODE)
#: The longest search taken, in characters, wherever it comes from (the API, the UI's
#: search page, the CLI): a search box's words, not a document.
MAX_QUERY = 500


@dataclass(frozen=True)
class Query:
    #: FTS5 MATCH expression over the text columns; "" when only filters were given.
    match: str = ""
    #: Each field's values, in the order given: a resource must match every one.
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)

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
    if len(text) > MAX_QUERY:
        raise BadRequest(
            f"the search is {len(text)} characters long; at most {MAX_QUERY} are taken"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A command line's bytes that are no UTF-8 arrive as lone surrogates, which
        # neither the index nor a URL can hold.
        raise BadRequest(
            f"the search {text!r} holds {text[exc.start]!r}, which is no UTF-8 text; "
            "type the search as text"
        ) from exc
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise BadRequest(f"the search {text!r} has an unclosed quote") from exc
    phrases: list[str] = []
    filters: dict[str, tuple[str, ...]] = {}
    for word in words:
        typed, sep, value = word.partition(":")
        key = _ALIASES.get(typed.lower(), typed.lower())
        if sep and key in FIELDS:
            if not value.strip():
                raise BadRequest(
                    f"the filter {typed}: has no value; write {typed}:VALUE, "
                    f"e.g. {typed}:{_EXAMPLES[key]}"
                )
            filters[key] = (*filters.get(key, ()), value)
            continue
        phrase = _phrase(word)
        if phrase is not None:
            phrases.append(phrase)
    # Once each: a word twice adds nothing to what must match, and each one costs the
    # full-text index a pass over its matches (`b* b* …`, 166 times in 500 characters,
    # took 18 times as long as `b*`, holding the index meanwhile).
    phrases = list(dict.fromkeys(phrases))
    filters = {key: tuple(dict.fromkeys(values)) for key, values in filters.items()}
    return Query(" AND ".join(phrases), filters)
