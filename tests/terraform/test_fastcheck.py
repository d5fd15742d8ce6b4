"""The fast path (simdjson) vouches only for what the exact path (Python's ``json``) accepts.

Each test holds the fast path's answer against the exact one computed here with
``terraform/gojson.py`` (what ``StateDoc.parse`` did before there was a fast
path): where the fast path answers, the exact path accepts with the same
values; where it cannot, the decision (and the message) is the exact path's.
The cases sit on every place the two parsers differ: integers beyond 64 bits,
numbers beyond a double, nesting near both depth limits, lone surrogate escapes,
repeated names, a byte-order mark, NUL, and bytes that are not UTF-8.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from statekeeper.errors import InvalidState
from statekeeper.terraform import fastcheck, gojson
from statekeeper.terraform.statedoc import ARRAY, OBJECT, StateDoc
from statekeeper.terraform.statestream import StateDocReader


def _exact(data: bytes, keep_document: bool) -> tuple[Any, list[tuple[str, Any]]] | None:
    """The top level as Python's json reads it with the state rules; None: refused."""
    last: list[list[tuple[str, Any]]] = [[]]

    def hook(pairs: list[tuple[str, Any]]) -> Any:
        last[0] = pairs
        return dict(pairs) if keep_document else OBJECT

    try:
        doc = gojson.loads(gojson.decode_text(data), object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) and doc is not OBJECT:
        return None
    # As StateDoc.parse looks: only a text with a surrogate escape may hold one alone.
    text = data.decode()
    if gojson.has_surrogate_escape(text) and not gojson.is_text(gojson.loads(text)):
        return None
    pairs = [(k, ARRAY if isinstance(v, list) and not keep_document else v) for k, v in last[0]]
    return (doc if keep_document else None), pairs


def _same(fast: Any, exact: Any) -> bool:
    """Equal, and floats the same float (repr tells -0.0 from 0.0, 1 from 1.0)."""
    return repr(fast) == repr(exact)


def _check_fast_within_exact(data: bytes) -> None:
    for keep in (True, False):
        fast = fastcheck.top_members(data, None if keep else (OBJECT, ARRAY))
        if fast is not None:
            exact = _exact(data, keep)
            assert exact is not None, data[:200]
            assert _same(fast, exact)


_WIDE = st.sampled_from(
    [
        2**63 - 1,
        2**63,
        2**64 - 1,
        2**64,
        -(2**63),
        -(2**63) - 1,
        10**30,
        -(10**30),
        1e308,
        5e-324,
        -0.0,
        0.1,
    ]
)
_TEXT = st.text(
    st.characters(codec="utf-8")
    | st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\U0001f600", "\x00", "\ufeff"]),
    max_size=5,
)
_SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | _WIDE | _TEXT
_JSON = st.recursive(
    _SCALAR,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(st.tuples(_TEXT | st.sampled_from(["a", "A", "serial"]), inner), max_size=4)
    ),
    max_leaves=10,
)
_NAMES = st.sampled_from(["version", "serial", "Serial", "lineage", "resources", "outputs", "x"])


def _encode(value: Any, ensure_ascii: bool) -> str:
    """JSON text of ``value``; a list of (key, value) tuples is an object (keys may repeat)."""
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        members = (
            f"{json.dumps(k, ensure_ascii=ensure_ascii)}:{_encode(v, ensure_ascii)}"
            for k, v in value
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v, ensure_ascii) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)  # NaN and Infinity as json writes them


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    members = draw(st.lists(st.tuples(_NAMES, _JSON), max_size=6))
    text = _encode(members or [("version", 4)], draw(st.booleans()))
    data = text.encode("utf-8", "surrogatepass")  # a raw surrogate: not UTF-8
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        data = (
            data[:at]
            + bytes([draw(st.sampled_from(b'{}[],:"\\0eE.-\xef\xbb\xbf\xff'))])
            + data[at:]
        )
    return data


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=documents())
@example(data=b'\xef\xbb\xbf{"version":4}')
@example(data=b'{"version":4,"serial":18446744073709551616}')
@example(data=b'{"version":4,"serial":1e400}')
@example(data=b'{"version":4,"serial":-0}')
@example(data=b'{"version":4,"serial":1,"serial":"x"}')
@example(data=b'{"version":4,"serial":1,"s\\u0065rial":2}')
@example(data=b'{"version":4,"x":"\\ud800","x":1}')
@example(data=b'{"version":4,"x":"\\ud83d\\ude00"}')
@example(data=b'{"version":4,"x":"\\u0000"}')
@example(data=b'{"version":4,"x":"\x00"}')
@example(data=b'{"version":4,"x":"\xc3"}')
def test_what_the_fast_path_reads_the_exact_path_reads_alike(data: bytes) -> None:
    _check_fast_within_exact(data)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=st.lists(_JSON, min_size=1, max_size=5), ensure_ascii=st.booleans())
def test_a_run_the_fast_path_passes_passes_json_scanner_as_text(
    items: list[Any], ensure_ascii: bool
) -> None:
    text = ",".join(_encode(item, ensure_ascii) for item in items)
    if fastcheck.items_pass(text):
        value = gojson.loads("[" + text + "]")
        assert gojson.is_text(value)


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize(
    "depth", [fastcheck.FAST_DEPTH - 2, fastcheck.FAST_DEPTH - 1, fastcheck.FAST_DEPTH, 1000, 1100]
)
def test_nesting_beyond_the_fast_depth_is_left_to_the_exact_path(depth: int) -> None:
    """A run's own array is a level: items nested FAST_DEPTH - 1 deep are the deepest it passes."""
    assert fastcheck.items_pass(_nested(depth)) == (depth < fastcheck.FAST_DEPTH)
    data = ('{"version":4,"x":' + _nested(depth) + "}").encode()
    fast = fastcheck.top_members(data, (OBJECT, ARRAY))
    assert (fast is not None) == (depth < fastcheck.FAST_DEPTH)
    _check_fast_within_exact(data)


#: (a top-level member's JSON, whether the state is accepted) where the two parsers differ
#: or the state rules read repeats.
_BOUNDARIES = [
    ('"x": 18446744073709551616', True),  # beyond 64 bits: simdjson refuses, json reads it
    ('"x": -9223372036854775809', True),
    ('"x": ' + "9" * 4301, False),  # beyond Python's int digits: refused by both
    ('"x": 1e400', True),  # a double's infinity: json reads it
    ('"x": [' + _nested(850) + "]", True),  # deeper than the fast path, inside json's limit
    ('"x": ' + _nested(5000), False),  # beyond both
    ('"x": "\\ud800"', False),  # lone surrogate escapes, kept: refused
    ('"x": "\\udc00\\ud800"', False),
    ('"\\ud800": 1', False),
    ('"x": "\\ud800", "x": 1', True),  # not kept (the last of two names wins): accepted
    ('"x": "\\ud83d\\ude00"', True),  # a pair: one character
    ('"x": "\\u0000"', True),
    ('"serial": 1, "serial": "one"', False),  # every repeat is read, in order
    ('"serial": "one", "serial": 1', False),
    ('"serial": null, "s\\u0065rial": 7', True),
    ('"x": NaN', False),
]


@pytest.mark.parametrize(("member", "accepted"), _BOUNDARIES)
def test_the_state_check_decides_at_each_boundary_as_the_exact_path(
    member: str, accepted: bool
) -> None:
    data = ('{"version": 4, "lineage": "l", ' + member + "}").encode()
    _check_fast_within_exact(data)
    assert _same_decision(data) == accepted
    # The same member inside an item of a large resources array: the streaming
    # reader checks runs of whole items, and this one sits in the middle of one.
    item = '{"mode":"managed","name":"r%d","v":[1,{"a":"b"}]}'
    items = [item % i for i in range(3000)]
    items.insert(1500, "{" + member + "}")
    data = ('{"version":4,"serial":1,"lineage":"l","resources":[' + ",".join(items) + "]}").encode()
    _same_decision(data)


def _same_decision(data: bytes) -> bool:
    """Whether StateDoc.parse accepts ``data``; the streaming reader (fed in pieces of
    several sizes) decides alike."""
    try:
        whole: Any = StateDoc.parse(data, keep_document=False)
    except InvalidState as exc:
        whole = str(exc)
    for piece in (7, 4096, 1 << 20):
        reader = StateDocReader()
        try:
            for start in range(0, len(data), piece):
                reader.feed(data[start : start + piece])
            streamed: Any = reader.finish()
        except InvalidState as exc:
            streamed = str(exc)
        assert type(streamed) is type(whole)
        if isinstance(whole, StateDoc):
            assert (streamed.serial, streamed.lineage) == (whole.serial, whole.lineage)
    return isinstance(whole, StateDoc)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'\xef\xbb\xbf{"version":4}', "byte-order mark"),
        (b'{"version":4,"x":"\x00"}', "NUL bytes"),
        (b'{"version":4,"x":"\xc3("}', "not UTF-8"),
        (b'{"version":4,"x":"\xed\xa0\x80"}', "not UTF-8"),  # a surrogate encoded as UTF-8
        (b'{"version":4,"x":"\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"version":4,"serial":18446744073709551616}', "from 0 to 18446744073709551615"),
        (b'{"version":4,"serial":1e400}', "the number inf"),
    ],
)
def test_refusals_keep_the_exact_paths_messages(data: bytes, message: str) -> None:
    with pytest.raises(InvalidState, match=message):
        StateDoc.parse(data)


def _outcome(read: Any) -> Any:
    try:
        return read().serial
    except InvalidState as exc:
        return "refused" if "not UTF-8" in str(exc) else str(exc)


def test_invalid_utf8_cut_across_chunks_is_refused_by_the_reader_as_by_the_parse() -> None:
    """A two-byte character cut by a chunk boundary is whole; a broken one is refused."""
    item = '{"mode":"managed","name":"r%d","v":"é"}'
    text = '{"version":4,"serial":1,"lineage":"l","resources":[%s]}'
    good = (text % ",".join(item % i for i in range(2000))).encode()
    at = good.index("é".encode(), len(good) // 2)
    bad = good[:at] + b"\xc3(" + good[at + 2 :]
    for data, expected in ((good, 1), (bad, "refused")):
        assert _outcome(lambda data=data: StateDoc.parse(data)) == expected
        for cut in (at, at + 1, at + 2):  # before the two bytes, between them, after them
            reader = StateDocReader()

            def streamed(data: bytes = data, cut: int = cut, reader: Any = reader) -> StateDoc:
                reader.feed(data[:cut])
                reader.feed(data[cut:])
                return reader.finish()  # type: ignore[no-any-return]

            assert _outcome(streamed) == expected


def test_each_thread_keeps_a_parser_for_small_texts_and_large_ones_get_their_own() -> None:
    """Small and large documents read in turn, on several threads at once, each read
    as the exact path reads it (a parser shared between threads would mix them)."""
    from concurrent.futures import ThreadPoolExecutor

    def doc(serial: int, size: int) -> bytes:
        pad = "x" * size
        return f'{{"version":4,"serial":{serial},"lineage":"l","resources":["{pad}"]}}'.encode()

    def read(serial: int) -> list[int]:
        sizes = (10, 2 << 20, 100_000, 3 << 20, 5)
        return [StateDoc.parse(doc(serial + i, size)).serial for i, size in enumerate(sizes)]

    with ThreadPoolExecutor(4) as pool:
        starts = range(0, 800, 100)
        for serial, serials in zip(starts, pool.map(read, starts), strict=True):
            assert serials == list(range(serial, serial + 5))


@pytest.mark.parametrize(
    "odd",
    [
        '{"mode":"managed","name":"q","v":"},{\\"mode\\":\\"managed\\",\\"name\\":\\"r1\\""}',
        '{"mode":"managed","name":"w","v":1180591620717411303424}',
        '{"mode":"managed","name":"s","v":"\\ud800"}',
        '{"mode":"managed","name":"s","v":"\\ud800","v":1}',
        '{"mode":"managed","name":"t","v":[1,,2]}',
    ],
)
def test_runs_across_a_large_array_decide_as_the_whole_document_parse(odd: str) -> None:
    """Runs are cut at a few hundred KB: an odd item every 7,001 items of a 2.5 MB array
    falls in different runs and at different places in them."""
    item = '{"mode":"managed","name":"r%d","v":[1,{"a":"b"}]}'
    items = [odd if i % 7001 == 7000 else item % i for i in range(50_000)]
    data = ('{"version":4,"serial":1,"lineage":"l","resources":[' + ",".join(items) + "]}").encode()
    accepted = _same_decision(data)
    assert accepted == ('\\ud800"}' not in odd and ",," not in odd)
