"""Reading a state document as its bytes arrive, in bounded memory.

:class:`StateDocReader` accepts and refuses exactly what
:meth:`StateDoc.parse <statekeeper.terraform.statedoc.StateDoc.parse>` does
(``docs/protocol.md#state-documents``), without the whole body in memory: a
test runs both on the same bytes, cut into chunks at random.

How it stays the same decoder: the top-level object, and the members of its
arrays and objects, are walked here with the grammar of Python's ``json``
(JSON whitespace, ``"key" : value``, commas, no trailing comma, nothing after
the document); every value below that is parsed by ``json``'s own C scanner,
one value at a time, except runs of whole items of an array, which simdjson
checks first (``terraform/fastcheck.py``: it passes only what the scanner
would). A value cut by the end of what has arrived fails to
parse and is tried again once at least twice as much text is there (so a
large value costs linear time); it is refused only when the body is complete.
Strict UTF-8, no byte-order mark, no NUL, no NaN or Infinity, and no lone
surrogate escape in what the parsed document keeps (the last of two equal keys
wins, as in a ``dict``) are checked as in ``terraform/gojson.py``.

The memory it holds is the undecoded tail of the text plus the largest value
below the top two levels (one resource of a state; for an OpenTofu encrypted
envelope, its ``encrypted_data`` string).
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Generator
from typing import Any

from statekeeper.errors import InvalidState
from statekeeper.terraform import fastcheck, gojson
from statekeeper.terraform.statedoc import ARRAY, EMPTY, OBJECT, StateDoc, json_kind

__all__ = ["StateDocReader"]

#: Chunks are decoded this many bytes at a time, whatever size they arrive in.
PIECE = 1 << 20

_WHITESPACE = re.compile(r"[ \t\n\r]*")
#: Characters that may continue a number the scanner has read so far.
_NUMBER_GOES_ON = frozenset("0123456789.eE+-")
#: What may follow an item of an array: a comma and the next item, or the end.
_DELIMITER = re.compile(r"[ \t\n\r]*([,\]])[ \t\n\r]*")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
#: How much of an item's start a boundary between items takes in (see _skip_whole_items).
_BOUNDARY_REACH = 16
#: The most text a run of whole items holds, unless one item is longer.
_RUN = 256 << 10

Scan = Callable[[str, int], tuple[Any, int]]
_Steps = Generator[None, None, Any]


class _Refused(Exception):
    """A JSON syntax error at a position of the reader's buffer."""

    def __init__(self, message: str, pos: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


class StateDocReader:
    """Feed the body with :meth:`feed`, then :meth:`finish` for its :class:`StateDoc`.

    Both raise :class:`~statekeeper.errors.InvalidState` as soon as the bytes
    are known to be refused.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        decoder = json.JSONDecoder(parse_constant=_no_constant)
        # The C scanner json.loads itself runs (the decoder builds it).
        self._scan: Scan = decoder.scan_once  # type: ignore[attr-defined]
        # The same scanner, but every object it reads becomes None at once: for the
        # items of an array, whose values are not kept. Building them (and the
        # garbage collector's passes over them) was half the cost of the check.
        checker = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_discard)
        self._check: Scan = checker.scan_once  # type: ignore[attr-defined]
        # Runs of whole items are checked by simdjson first (terraform/fastcheck.py),
        # except before the end of the last run it refused (an offset in the whole text).
        self._unvouched = -1
        # What separates two items of the array being read, with the start of the
        # next (learned from its first two items): where a run of whole items ends.
        self._boundary = ""
        self._buf = ""
        self._pos = 0
        # Text arrived but not yet appended to _buf: joined once there is enough.
        self._pending: list[str] = []
        self._pending_size = 0
        # How much unread text the parser waits for before it runs again.
        self._need = 1
        # Where _buf starts in the whole text, for messages.
        self._offset = 0
        self._first = True
        self._blank = True
        self._eof = False
        self._pairs: list[tuple[str, Any]] = []
        # Per top-level member, in order: is what the parsed document keeps of it text?
        self._text: list[bool] = []
        self._steps = self._document()
        self._done = False

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the body."""
        view = memoryview(chunk)
        for start in range(0, len(view), PIECE):
            piece = view[start : start + PIECE]
            self._blank = self._blank and bytes(piece).isspace()
            self._text_in(self._decode(piece, final=False))

    def finish(self) -> StateDoc:
        """The body is complete: its facts, or InvalidState."""
        tail = self._decode(b"", final=True)
        if self._blank:
            raise InvalidState(EMPTY)
        self._eof = True
        self._text_in(tail)
        if not self._done:
            raise AssertionError("the reader stopped before the end of the body")
        if not all(self._kept_is_text()):
            raise InvalidState(
                "the state holds a lone UTF-16 surrogate escape (an unpaired \\ud800-\\udfff), "
                "which is not text: Terraform would read it as U+FFFD, not as stored"
            )
        return StateDoc.from_members(self._pairs)

    # Text in, steps run

    def _decode(self, data: bytes | memoryview, *, final: bool) -> str:
        try:
            text = self._utf8.decode(data, final)
        except UnicodeDecodeError as exc:
            raise InvalidState(
                f"the state is not JSON Terraform can read: it is not UTF-8 text ({exc})"
            ) from exc
        if self._first and text:
            self._first = False
            if text.startswith("\ufeff"):
                raise InvalidState(
                    "the state is not JSON Terraform can read: it starts with a byte-order "
                    "mark; save it as UTF-8 without BOM"
                )
        if "\x00" in text:
            raise InvalidState(
                "the state is not JSON Terraform can read: it holds NUL bytes (UTF-16 or "
                "UTF-32 text?); send UTF-8 JSON"
            )
        return text

    def _text_in(self, text: str) -> None:
        if text:
            self._pending.append(text)
            self._pending_size += len(text)
        waiting = len(self._buf) - self._pos + self._pending_size < self._need
        if (self._done or waiting) and not self._eof:
            return
        # Drop what was read.
        self._offset += self._pos
        self._buf = "".join([self._buf[self._pos :], *self._pending])
        self._pending.clear()
        self._pending_size = 0
        self._pos = 0
        self._need = 1
        if self._done:
            return
        try:
            next(self._steps)
        except StopIteration:
            self._done = True
        except _Refused as exc:
            raise self._invalid(exc.message, exc.pos) from None

    def _invalid(self, message: str, pos: int | None) -> InvalidState:
        if pos is None:
            return InvalidState(f"the state could not be parsed as JSON: {message}")
        # json's own messages give a line and column too; counting lines through a
        # 500 MB body costs more than the rest of the check, so the offset it is. After
        # a colon, as json writes it: some of its messages end in "at" already.
        return InvalidState(
            f"the state could not be parsed as JSON: {message}: character {self._offset + pos}"
        )

    # The grammar, as generators that yield when they need more text

    def _document(self) -> _Steps:
        yield from self._whitespace()
        if self._pos == len(self._buf):
            return  # only whitespace: finish() says the state is empty
        if self._buf[self._pos] != "{":
            # Refused either way; parsed whole for the same message as StateDoc.parse.
            value, _ = yield from self._value(self._scan)
            yield from self._whitespace()
            if self._pos < len(self._buf):
                raise _Refused("Extra data", self._pos)
            raise InvalidState(f"the state must be a JSON object, not {json_kind(value)}")
        self._pos += 1
        yield from self._members(top=True)
        yield from self._whitespace()
        if self._pos < len(self._buf):
            raise _Refused("Extra data", self._pos)

    def _whitespace(self) -> _Steps:
        while True:
            self._pos = _WHITESPACE.match(self._buf, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._buf) or self._eof:
                return
            yield

    def _char(self) -> _Steps:
        """The next character (not consumed); '' at the end of the body."""
        while self._pos == len(self._buf):
            if self._eof:
                return ""
            yield
        return self._buf[self._pos]

    def _members(self, *, top: bool) -> _Steps:
        """An object's members after its '{', through its '}'."""
        kept: dict[str, bool] = {}
        yield from self._whitespace()
        if (yield from self._char()) == "}":
            self._pos += 1
            return kept
        while True:
            if (yield from self._char()) != '"':
                raise _Refused("Expecting property name enclosed in double quotes", self._pos)
            key, key_text = yield from self._value(_key)
            yield from self._whitespace()
            if (yield from self._char()) != ":":
                raise _Refused("Expecting ':' delimiter", self._pos)
            self._pos += 1
            yield from self._whitespace()
            if top:
                value, text = yield from self._member_value()
                self._pairs.append((key, value))
                self._text.append(key_text and text)
            else:
                _, text = yield from self._value(self._scan)
                kept.pop(key, None)
                kept[key] = key_text and text
            yield from self._whitespace()
            delimiter = yield from self._char()
            self._pos += 1
            if delimiter == "}":
                return kept
            if delimiter != ",":
                raise _Refused("Expecting ',' delimiter", self._pos - 1)
            yield from self._whitespace()

    def _member_value(self) -> _Steps:
        """A top-level member's value: its items walked one by one when it is a container."""
        opening = yield from self._char()
        if opening == "{":
            self._pos += 1
            kept = yield from self._members(top=False)
            return OBJECT, all(kept.values())
        if opening == "[":
            self._pos += 1
            text = yield from self._items()
            return ARRAY, text
        return (yield from self._value(self._scan))

    def _items(self) -> _Steps:
        """An array's items after its '[', through its ']'."""
        text = True
        self._boundary = ""
        yield from self._whitespace()
        if (yield from self._char()) == "]":
            self._pos += 1
            return text
        while True:
            done, text, want = self._complete_items(text)
            if done:
                return text
            _, item_text = yield from self._value(self._scan, want)
            text = text and item_text
            yield from self._whitespace()
            delimiter = yield from self._char()
            self._pos += 1
            if delimiter == "]":
                return text
            if delimiter != ",":
                raise _Refused("Expecting ',' delimiter", self._pos - 1)
            yield from self._whitespace()

    def _complete_items(self, text: bool) -> tuple[bool, bool, int]:
        """Items already in the buffer, without a step per item: a state is
        mostly its resources, tens of thousands of them.

        Returns whether the array ended, whether its items are text, and how
        much text the careful path should wait for before it scans again (an
        item cut by the end of the buffer fails here: scanning it again at once
        would fail again, and each failure costs a pass over the buffer).
        """
        buf = self._buf
        while True:
            if self._skip_whole_items():
                # What follows the last boundary is the start of an item, most often
                # cut by the end of the buffer: wait for more before scanning it (a
                # failed scan counts the lines of the buffer for its message).
                return False, text, 2 * (len(buf) - self._pos) + 1
            pos = self._pos
            try:
                _, end = self._check(buf, pos)
            except (StopIteration, ValueError, RecursionError):
                # The careful path says why, or waits for more.
                return False, text, 2 * (len(buf) - pos) + 1
            after = _DELIMITER.match(buf, end)
            if after is None or after.end() == len(buf):
                return False, text, 0
            if _SURROGATE_ESCAPE.search(buf, pos, end) and not gojson.is_text(
                self._scan(buf, pos)[0]
            ):
                text = False
            self._pos = after.end()
            if after.group(1) == "]":
                return True, text, 0
            if not self._boundary:
                # Enough of the next item to tell it from a comma deeper inside one.
                self._boundary = buf[end : after.end() + _BOUNDARY_REACH]

    def _skip_whole_items(self) -> bool:
        """Pass the whole items up to the last place the learned boundary is found, and
        the comma after them, a run at a time; whether it got there.

        Each run is checked as the items of an array of its own, by simdjson
        and, when it refuses, by the same C scanner as every other value, so it
        passes only if each item would: a boundary found inside a string or a
        nested value leaves it unbalanced, and it fails. Any failure (or a
        surrogate escape, whose value must be looked at) leaves the items to the
        scan one at a time, which decides as before.
        """
        boundary = self._boundary
        if not boundary:
            return False
        last = self._buf.rfind(boundary, self._pos)
        if last <= self._pos:
            return False
        while self._pos < last:
            # At most _RUN characters (or one item, if longer): simdjson's buffers
            # grow to the largest text it parsed, and stay with the thread.
            cut = self._buf.rfind(boundary, self._pos, self._pos + _RUN)
            if not self._pass_run(cut if cut > self._pos else last):
                return False
        return True

    def _pass_run(self, cut: int) -> bool:
        """Pass the whole items from the position to ``cut`` (a boundary), and the comma
        after them; whether they are."""
        buf, pos = self._buf, self._pos
        vouched = False
        if self._offset + pos >= self._unvouched:
            vouched = fastcheck.items_pass(buf[pos:cut])
            if not vouched:
                # Not again before this run is passed: the items are now read one at a
                # time up to the one simdjson refused, and each would retry the rest.
                self._unvouched = self._offset + cut
        if not vouched:
            # simdjson cannot vouch for them: json's scanner decides, as it always did.
            if _SURROGATE_ESCAPE.search(buf, pos, cut):
                return False
            run = "".join(("[", buf[pos:cut], "]"))  # one copy fewer than "[" + … + "]"
            try:
                _, end = self._check(run, 0)
            except (StopIteration, ValueError, RecursionError):
                end = -1
            if end != len(run):
                # Not where items meet (or not whole): no more runs in this array.
                self._boundary = ""
                return False
        after = _DELIMITER.match(buf, cut)
        assert after is not None and after.group(1) == ","  # the boundary starts with one
        self._pos = after.end()
        return True

    def _value(self, scan: Scan, want: int = 0) -> _Steps:
        """One value parsed by ``scan`` at the position, and whether it is text.

        A number at the end of what arrived may go on in the next chunk (``1``
        then ``e5``), so a value counts only when a character that cannot
        continue it follows, or the body is complete; a failure counts only
        when the body is complete. ``want``: text to wait for before the first scan.
        """
        while True:
            start = self._pos
            failure: _Refused | None = None
            if len(self._buf) - start >= want or self._eof:
                try:
                    value, end = scan(self._buf, start)
                except StopIteration as exc:
                    failure = _Refused("Expecting value", exc.value)
                except json.JSONDecodeError as exc:
                    failure = _Refused(exc.msg, exc.pos)
                except (ValueError, RecursionError) as exc:
                    # A number too long for int(), nesting deeper than the stack.
                    failure = _Refused(str(exc), None)
                else:
                    if self._eof or (
                        end < len(self._buf) and self._buf[end] not in _NUMBER_GOES_ON
                    ):
                        self._pos = end
                        text = _SURROGATE_ESCAPE.search(
                            self._buf, start, end
                        ) is None or gojson.is_text(value)
                        return value, text
                if self._eof:
                    assert failure is not None  # at the end a value is complete or wrong
                    raise failure
                want = 2 * (len(self._buf) - start) + 1
            self._need = want
            yield

    def _kept_is_text(self) -> list[bool]:
        """Per key of the top-level object as a dict keeps it (the last member wins)."""
        last: dict[str, bool] = {}
        for (key, _), text in zip(self._pairs, self._text, strict=True):
            last.pop(key, None)
            last[key] = text
        return list(last.values())


def _key(text: str, pos: int) -> tuple[str, int]:
    """A member name at ``pos`` (its opening quote), as json's object parser reads it."""
    key: str
    key, end = json.decoder.scanstring(text, pos + 1, True)  # type: ignore[attr-defined]
    return key, end


def _discard(pairs: list[tuple[str, Any]]) -> None:
    return None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON value (JSON has no NaN or Infinity)")
