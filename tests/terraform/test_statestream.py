"""The streaming state reader accepts and refuses exactly what ``StateDoc.parse`` does.

A differential test: documents built to hit the rules (duplicate and
case-folded keys, every JSON type in every top-level field, lone surrogate
escapes, NaN, numbers cut by a chunk boundary), then damaged at random bytes,
are fed to both the whole-document parse and the streaming reader cut into
random chunks. Accepted by both with the same facts, or refused by both.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from statekeeper.errors import InvalidState
from statekeeper.terraform.statedoc import StateDoc
from statekeeper.terraform.statestream import StateDocReader

_TEXT = st.text(
    st.characters(codec="utf-8") | st.sampled_from(["\ud800", "\udfff", "\U0001f600", "\\", '"']),
    max_size=6,
)
_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_JSON = st.recursive(
    _SCALAR,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(st.tuples(_TEXT | st.sampled_from(["a", "b"]), inner), max_size=4)
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    [
        "version",
        "serial",
        "lineage",
        "terraform_version",
        "outputs",
        "resources",
        "check_results",
        "encryption_version",
        "encrypted_data",
        "Serial",
        "VERSION",
        "Lineage",
        "other",
    ]
)
_GOOD = st.sampled_from([4, 3, 1, 0, 2**64 - 1, "1.15.0", "l-1", [], {}, None])
#: Bytes a damaged body may gain: structure, number parts, escapes, non-UTF-8, NUL.
_NOISE = st.sampled_from([*b'{}[],:"\\ \n0123456789eE.+-ntfu', 0, 0xFF, 0xC3, 0xEF])


def _encode(value: Any, ensure_ascii: bool, indent: int | None) -> str:
    """JSON text of ``value``; a list of (key, value) tuples is an object (keys may repeat)."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        members = [
            f"{json.dumps(k, ensure_ascii=ensure_ascii)}: {_encode(v, ensure_ascii, indent)}"
            for k, v in value
        ]
        return "{" + ("," + "\n" * bool(indent)).join(members) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_encode(v, ensure_ascii, indent) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    members = draw(st.lists(st.tuples(_KEYS, _GOOD | _JSON), max_size=8))
    if draw(st.booleans()):
        members = [("version", 4), ("serial", 1), ("lineage", "l"), *members]
    text = _encode(
        members or [("version", 4)], draw(st.booleans()), draw(st.sampled_from([None, 1]))
    )
    if draw(st.booleans()):
        text = draw(st.sampled_from([" ", "\n", "\t", "\r\n"])) + text + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")  # a raw surrogate: not UTF-8
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "truncate"]))
        if kind == "insert":
            data = data[:at] + bytes([draw(_NOISE)]) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + 1 :]
        else:
            data = data[:at]
    return data


def _whole(data: bytes) -> tuple[Any, ...]:
    try:
        doc = StateDoc.parse(data, keep_document=False)
    except InvalidState:
        return ("refused",)
    return (doc.serial, doc.lineage, doc.format_version, doc.terraform_version, doc.encrypted)


def _streamed(data: bytes, cuts: list[int]) -> tuple[Any, ...]:
    reader = StateDocReader()
    try:
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            reader.feed(data[start:end])
        doc = reader.finish()
    except InvalidState:
        return ("refused",)
    return (doc.serial, doc.lineage, doc.format_version, doc.terraform_version, doc.encrypted)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=documents(), cuts=st.lists(st.integers(0, 4000), max_size=6))
@example(data=b'{"version":4,"serial":1e2}', cuts=[24])
@example(data=b'{"version":4,"serial":12', cuts=[23])
@example(data=b'{"version":4,"resources":["\\ud800"],"resources":[]}', cuts=[30])
@example(data=b'{"version":4,"outputs":{"a":"\\ud800","a":1}}', cuts=[])
@example(data=b'{"version":4,"outputs":{"a":"\\ud800","b":1}}', cuts=[])
@example(data=b'{"version":4,"serial":1,"lineage":"x",}', cuts=[5])
@example(data=b"[" * 5000 + b"]" * 5000, cuts=[100])
@example(data=b'{"version":4,"serial":tru', cuts=[])
@example(data=b'{"version":4, "x": "\xc3', cuts=[20])
def test_the_streaming_reader_decides_as_the_whole_document_parse(
    data: bytes, cuts: list[int]
) -> None:
    cuts = sorted({c for c in cuts if c <= len(data)})
    assert _streamed(data, cuts) == _whole(data)


def test_a_large_value_cut_in_many_chunks_is_read_in_linear_time() -> None:
    """One 8 MB string (an OpenTofu envelope's payload) fed in 1 KB chunks: each retry
    waits for twice the text, so this takes well under a second, not minutes."""
    payload = "A" * (8 * 1024 * 1024)
    data = json.dumps({"encryption_version": "v0", "encrypted_data": payload}).encode()
    reader = StateDocReader()
    for start in range(0, len(data), 1024):
        reader.feed(data[start : start + 1024])
    assert reader.finish().encrypted


#: Values an item may hold that look like where two items meet, or hide a surrogate.
_TRICKS = st.sampled_from(
    [
        '},{"mode": "managed"',
        ', {"mode": "managed", "name": "x"}',
        [("mode", "managed"), ("name", "nested")],
        [[("mode", "managed")], [("mode", "managed")]],
        "\ud800",
        [("mode", "\udfff")],
    ]
)


@st.composite
def many_items(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A state whose resources are many items alike (so whole runs of them are passed
    with one scan), some holding values made to confuse where items meet, then
    damaged and cut into chunks as above."""
    count = draw(st.integers(3, 40))
    items = [
        [("mode", "managed"), ("name", f"r{i}"), ("v", draw(_JSON | _TRICKS))] for i in range(count)
    ]
    doc: list[tuple[str, Any]] = [("version", 4), ("serial", 1), ("lineage", "l")]
    doc.append(("resources", items))
    # Members after the array, and another array of items alike: a run must end
    # where this array's items meet, never past its end.
    doc += draw(st.lists(st.tuples(_KEYS, _GOOD | st.just(items[:3])), max_size=3))
    text = _encode(doc, draw(st.booleans()), draw(st.sampled_from([None, 1])))
    data = text.encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "truncate", "nothing"]))
        if kind == "insert":
            data = data[:at] + bytes([draw(_NOISE)]) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + 1 :]
        elif kind == "truncate":
            data = data[:at]
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=5))
    return data, sorted(set(cuts))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=many_items())
def test_runs_of_whole_items_are_decided_as_the_whole_document_parse(
    case: tuple[bytes, list[int]],
) -> None:
    data, cuts = case
    assert _streamed(data, cuts) == _whole(data)


def _read_in_pieces(data: bytes, piece: int) -> None:
    reader = StateDocReader()
    for start in range(0, len(data), piece):
        reader.feed(data[start : start + piece])
    reader.finish()


def test_a_bad_item_deep_inside_a_large_array_is_refused() -> None:
    """Items read a run at a time still refuse one that is wrong, wherever the chunks fall."""
    item = '{{"mode":"managed","name":"r{0}","v":[1,2,{{"a":"b"}}]}}'
    good = ",".join(item.format(i) for i in range(5000))
    for bad_item, message in (
        ('{"mode":"managed","name":"bad","v":[1,,2]}', "Expecting value"),
        ('{"mode":"managed","name":"bad","v":NaN}', "NaN"),
        ('{"mode":"managed","name":"bad","v":"\\ud800"}', "surrogate"),
    ):
        text = f'{{"version":4,"serial":1,"lineage":"l","resources":[{good},{bad_item},{good}]}}'
        for piece in (4096, 65536, 1 << 20):
            with pytest.raises(InvalidState, match=message):
                _read_in_pieces(text.encode(), piece)
        _read_in_pieces(text.replace(bad_item + ",", "").encode(), 4096)  # the rest is fine


def test_a_message_ending_in_at_is_not_doubled() -> None:
    """json says "Unterminated string starting at"; the offset follows after a colon."""
    text = '{"version":4,"serial":1,"lineage":"l","resources":[{"a":"cut'
    with pytest.raises(InvalidState) as caught:
        _read_in_pieces(text.encode(), 4096)
    assert caught.value.message == (
        "the state could not be parsed as JSON: Unterminated string starting at: character 56"
    )
