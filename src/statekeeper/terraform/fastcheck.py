"""The fast path of the state check: simdjson says yes, or the exact path decides.

Python's ``json`` builds a Python object for every value it reads, and the
check keeps almost none of them: for a 100 MB state, building them was most of
a write's CPU. simdjson validates JSON in C++ (about 3 GB/s here) without
building anything until asked, so it checks first; only a document (or a run
of whole items) it accepts is taken from it, and everything it refuses goes
to the exact path (``terraform/gojson.py``, ``terraform/statestream.py``),
whose decision and message are the ones a client sees.

That is sound only if what simdjson accepts the exact path accepts too, with
the same values. It does, value for value (``tests/terraform/test_fastcheck.py``
compares the two), but for these differences, each handled here:

- simdjson skips a UTF-8 byte-order mark; the exact path refuses one, so a body
  that starts with one is left to it.
- simdjson refuses nesting deeper than 1024 levels; Python's parser refuses at
  its recursion limit (1000) less the frames beneath the parse. The text is
  wrapped in enough arrays that simdjson refuses beyond :data:`FAST_DEPTH`,
  well inside what the exact path accepts from any thread.
- simdjson refuses what the exact path accepts: integers beyond 64 bits,
  numbers beyond a double (``1e400``), and every lone surrogate escape (the
  exact path refuses one only where the parsed document keeps it). Those go to
  the exact path, which decides.
- A top level that repeats a name: the state rules read every repeat in order
  (``StateDoc.from_members``), a parsed object keeps only the last, so such a
  document goes to the exact path too.

A parser is not shared between threads: each thread keeps one for small texts,
and a large text gets its own.
"""

from __future__ import annotations

import threading
from typing import Any

import simdjson

__all__ = ["FAST_DEPTH", "items_pass", "top_members"]

#: simdjson's own limit on nesting (its parser's default), a value inside the
#: innermost array or object counting as a level.
_SIMDJSON_DEPTH = 1024
#: The deepest nesting of arrays and objects the fast path accepts (the document's
#: top-level object, or a run's array, is the first); deeper goes to the exact path.
FAST_DEPTH = 800
_PAD = _SIMDJSON_DEPTH - 1 - FAST_DEPTH
_OPEN, _CLOSE = "[" * _PAD, "]" * _PAD
_OPEN_BYTES, _CLOSE_BYTES = _OPEN.encode(), _CLOSE.encode()
#: From the wrapping arrays to the document inside them.
_INSIDE = "/0" * _PAD
_BOM = b"\xef\xbb\xbf"
#: How pysimdjson refuses a text: ValueError for bad JSON (UnicodeError for bad
#: UTF-8 or a str it cannot encode), RuntimeError for the rest of simdjson's
#: errors (too deep, an integer beyond 64 bits). Its other RuntimeError, a parser
#: reused while a result of its last parse lives, cannot happen here (no result
#: outlives the call that made it); if it did, the exact path would decide.
_REFUSED = (ValueError, RuntimeError)

#: Member values of a document's top-level object, in document order.
Members = list[tuple[str, Any]]


#: Texts up to this size are parsed by their thread's own parser, kept: a parser
#: allocates buffers several times the text's size on its first parse, and a fresh
#: one for each 100 KB write cost more in page faults than the parse itself.
#: Larger texts get a parser of their own, so no thread keeps a large one.
_KEPT_SIZE = 512 << 10
_threads = threading.local()


def _kept_parser() -> simdjson.Parser:
    parser: simdjson.Parser | None = getattr(_threads, "parser", None)
    if parser is None:
        parser = _threads.parser = simdjson.Parser()
    return parser


def items_pass(items: str) -> bool:
    """True when ``items``, the text of whole items and the commas between them, is
    sure to pass the exact path with no lone surrogate in any of them; False when
    the exact path must look (it may still accept)."""
    parser = _kept_parser() if len(items) <= _KEPT_SIZE else simdjson.Parser()
    try:
        # Parsed into simdjson's own tape only: no Python object is built.
        parser.parse("".join((_OPEN, "[", items, "]", _CLOSE)))
    except _REFUSED:
        return False
    return True


def top_members(data: bytes, placeholders: tuple[Any, Any] | None) -> tuple[Any, Members] | None:
    """The whole document and its top-level members as the exact path reads them,
    or None when the exact path must decide.

    ``placeholders`` (an object's, an array's): nested values become them instead
    of being built, and the document returned is None.
    """
    if data.startswith(_BOM):
        return None
    parser = _kept_parser() if len(data) <= _KEPT_SIZE else simdjson.Parser()
    try:
        wrapped = parser.parse(b"".join((_OPEN_BYTES, data, _CLOSE_BYTES)))
    except _REFUSED:
        return None
    assert isinstance(wrapped, simdjson.Array)
    top = wrapped.at_pointer(_INSIDE)
    if not isinstance(top, simdjson.Object):
        return None  # the exact path names what it is
    names = list(top.keys())
    if len(set(names)) != len(names):
        return None
    if placeholders is None:
        document = top.as_dict()
        return document, list(document.items())
    obj, array = placeholders
    members: Members = []
    for name in names:
        value = top[name]
        if isinstance(value, simdjson.Object):
            value = obj
        elif isinstance(value, simdjson.Array):
            value = array
        members.append((name, value))
    # Every proxy into the parser's tape is gone when this returns (a kept parser
    # refuses to parse again while one lives).
    return None, members
