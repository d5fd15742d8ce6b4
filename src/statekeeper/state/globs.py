"""State globs: the one syntax that names a set of states.

``*`` matches any run of characters within one path segment (it does not cross
``/``), ``?`` one character other than ``/``, and ``**`` any number of whole
segments, zero included: ``team/**`` matches ``team/a.tfstate`` and
``team/a/b/c.tfstate``, and ``**`` alone matches every state. Any other
character matches itself (``.`` included); a character no state name holds
(``[``, a space) would make the glob match nothing, so it is refused where the
glob is written: there are no ``[...]`` classes.

Grants (``team/**:write``), the lock policy's and the history's rules, webhook
subscriptions, the metrics' ``state`` label allow-list and the filters of the
audit trail, the inventory and the states page all take this syntax, and all
parse it here: a malformed glob is refused in the same words wherever it is
written, words about a glob.

A prefix (``statekeeper states team/``) is no glob: it is the literal start of
state names. One holding ``*``, ``?`` or ``[`` is almost certainly a glob typed as
a prefix, and would match nothing: :func:`literal_prefix` refuses it, in the
listings, the reap, the prune and the trash the CLI and the API share.

A glob ending in ``/`` (``team/``) matches no state, since no state name ends in
``/``: it is refused where it is written, with the glob that was meant
(``team/**``). One already stored where it was accepted before (a token's grants,
a webhook's states) is read back as :func:`stored_glob`: it still matches nothing,
as it always did, and does not break the token or the subscription holding it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from statekeeper.errors import BadRequest
from statekeeper.patterns import whole
from statekeeper.terraform.names import NAME_CHARACTERS

if TYPE_CHECKING:
    from statekeeper.terraform.names import StateName

__all__ = [
    "GLOB",
    "GLOB_PATTERN",
    "PREFIX_PATTERN",
    "StateGlob",
    "glob_of",
    "literal_prefix",
    "parse_glob",
    "stored_glob",
    "stored_glob_of",
]

_GLOB_HELP = (
    "write a state glob as a state name in which * matches within one segment, ? one "
    "character and ** any number of segments, e.g. 'team/**' or '*/prod.tfstate'"
)
_NOT_IN_A_NAME = re.compile(f"[^{NAME_CHARACTERS}/*?]")
# A segment is '**', or characters of a name, '?' and single '*'s (never two in a row).
_SEGMENT = rf"\*\*|\*?(?:[{NAME_CHARACTERS}?]\*?)+|\*"
#: A glob :func:`glob_of` takes, as a pattern body (a grant's holds one).
GLOB = f"(?:{_SEGMENT})(?:/(?:{_SEGMENT}))*"
#: What :func:`parse_glob` takes, as a JSON Schema pattern (:mod:`statekeeper.patterns`).
GLOB_PATTERN = whole(rf"\s*{GLOB}\s*")


@dataclass(frozen=True)
class StateGlob:
    """A parsed glob: its text, and the regular expression a whole name must match."""

    pattern: str
    regex: re.Pattern[str]

    def __str__(self) -> str:
        return self.pattern

    def covers(self, name: StateName | None) -> bool:
        """True when the glob names ``name`` (None: the server itself, which ``**`` alone
        names: a grant on ``**`` covers the server's own actions)."""
        if name is None:
            return self.pattern == "**"
        return self.regex.fullmatch(str(name)) is not None


@lru_cache(maxsize=4096)
def parse_glob(text: str) -> StateGlob:
    """The glob ``text`` writes (spaces around it dropped); a :class:`BadRequest` that
    says what is wrong with it and how to write one."""
    return glob_of(text.strip(), _GLOB_HELP)


@lru_cache(maxsize=4096)
def stored_glob(text: str) -> StateGlob:
    """Like :func:`parse_glob`, for a glob read back from where it was stored (see the
    module's docstring): one ending in ``/`` is taken, and matches nothing."""
    return stored_glob_of(text.strip(), _GLOB_HELP)


def glob_of(pattern: str, how: str) -> StateGlob:
    """``pattern`` as a glob, refused with ``how`` to write the text it came in (a grant
    says how to write a grant)."""
    glob = stored_glob_of(pattern, how)
    if pattern.endswith("/"):
        meant = pattern.removesuffix("/")
        meant = meant if meant == "**" or meant.endswith("/**") else meant + "/**"
        raise BadRequest(
            f"the state glob {pattern!r} ends in '/' and so matches no state (no state "
            f"name ends in '/'); write {meant!r} for every state under it; " + how
        )
    stray = _NOT_IN_A_NAME.search(pattern)
    if stray is not None:
        raise BadRequest(
            f"the state glob {pattern!r} holds {stray.group()!r}, which no state name "
            "holds, and so matches no state (a glob has no [...] classes); " + how
        )
    return glob


def stored_glob_of(pattern: str, how: str) -> StateGlob:
    """:func:`glob_of` without the refusal of a trailing ``/`` (:func:`stored_glob`)."""
    if not pattern:
        raise BadRequest("the state glob is empty; " + how)
    if pattern.startswith("/") or "//" in pattern:
        raise BadRequest(f"the state glob {pattern!r} has an empty segment; " + how)
    segments = pattern.split("/")
    parts: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            # Zero or more whole segments, each with its separator.
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        if "**" in segment:
            raise BadRequest(f"the state glob {pattern!r} uses '**' inside a segment; " + how)
        out = ""
        for ch in segment:
            out += "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch)
        parts.append(out if last else out + "/")
    return StateGlob(pattern, re.compile("".join(parts)))


_GLOB_CHARACTERS = r"*?\["
_GLOB_IN_PREFIX = re.compile(f"[{_GLOB_CHARACTERS}]")
#: What :func:`literal_prefix` takes, as a JSON Schema pattern.
PREFIX_PATTERN = whole(f"[^{_GLOB_CHARACTERS}]*")


def literal_prefix(prefix: str) -> str:
    """``prefix``, refused when it holds a glob character: no state name holds one, so
    the prefix would match nothing where a glob was surely meant."""
    found = _GLOB_IN_PREFIX.search(prefix)
    if found is None:
        return prefix
    meant = prefix[: found.start()]
    instead = f"give {meant!r} for the states under it" if meant else "give none for every state"
    raise BadRequest(
        f"the prefix {prefix!r} holds {found.group()!r}: a prefix is the literal start of "
        f"state names, not a glob; {instead}"
    )
