"""States are accepted exactly when Terraform's own decoder can read them.

The property tests run the validator alone; the differential test hands the
same bytes to real Terraform (``terraform show -json FILE``) and requires the
same verdict, so the rules are Terraform's and not our reading of its code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from statekeeper.errors import InvalidState
from statekeeper.terraform.statedoc import MAX_SERIAL, StateDoc
from statekeeper.terraform.statestream import StateDocReader
from statekeeper.testing.terraform import Terraform

BASE: dict[str, Any] = {
    "version": 4,
    "terraform_version": "1.15.0",
    "serial": 3,
    "lineage": "9f3e0c1e-7a55-4c53-a7a4-2f4b1f3f0f01",
    "outputs": {},
    "resources": [],
    "check_results": None,
}


def _verdict(data: bytes) -> str | None:
    """None when accepted, else the refusal's message; both parse paths must agree,
    and the streaming reader must accept exactly the same (fed whole, and a byte
    at a time)."""
    outcomes = []
    for keep in (True, False):
        try:
            doc = StateDoc.parse(data, keep_document=keep)
        except InvalidState as exc:
            outcomes.append(exc.message)
        else:
            outcomes.append(None)
            assert doc.serial <= MAX_SERIAL
    assert outcomes[0] == outcomes[1], outcomes
    for cuts in ([], list(range(1, len(data)))):
        streamed = read_streaming(data, cuts)
        assert (streamed is None) == (outcomes[0] is None), (outcomes[0], streamed)
    return outcomes[0]


def read_streaming(data: bytes, cuts: list[int]) -> str | None:
    """The streaming reader's verdict on ``data`` fed in pieces cut at ``cuts``."""
    reader = StateDocReader()
    try:
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            reader.feed(data[start:end])
        reader.finish()
    except InvalidState as exc:
        return exc.message
    return None


def _doc(**fields: Any) -> bytes:
    return json.dumps({**BASE, **fields}, indent=2).encode()


_SERIALS = st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([2**64 - 1, 2**64])


@given(serial=_SERIALS)
def test_a_serial_is_accepted_exactly_in_the_uint64_range(serial: int) -> None:
    refused = _verdict(_doc(serial=serial))
    assert (refused is None) == (0 <= serial <= MAX_SERIAL), refused
    if refused:
        assert "'serial'" in refused and str(MAX_SERIAL) in refused


@given(serial=st.floats(allow_nan=False, allow_infinity=False))
def test_a_fractional_or_exponent_serial_is_refused(serial: float) -> None:
    assert _verdict(_doc(serial=serial)) is not None


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(
    value=_JSON,
    constant=st.sampled_from(["NaN", "Infinity", "-Infinity"]),
    where=st.sampled_from(["outputs", "resources", "top"]),
)
def test_nan_or_infinity_anywhere_is_refused(value: Any, constant: str, where: str) -> None:
    marker = "__CONSTANT__"
    if where == "outputs":
        doc = {**BASE, "outputs": {"o": {"value": [value, marker], "type": "dynamic"}}}
    elif where == "resources":
        doc = {**BASE, "x_attributes": {"deep": [value, {"k": marker}]}}
    else:
        doc = {**BASE, "extra": marker}
    data = json.dumps(doc).replace(f'"{marker}"', constant).encode()
    refused = _verdict(data)
    assert refused is not None and constant.lstrip("-") in refused


@given(extra=st.dictionaries(st.text(max_size=8), _JSON, max_size=3))
def test_an_accepted_state_in_another_encoding_or_with_a_bom_is_refused(
    extra: dict[str, Any],
) -> None:
    text = json.dumps({**BASE, "extra": extra}, ensure_ascii=False)
    assert _verdict(text.encode()) is None
    for data in (
        b"\xef\xbb\xbf" + text.encode(),
        text.encode("utf-16"),
        text.encode("utf-16-le"),
        text.encode("utf-32"),
    ):
        refused = _verdict(data)
        assert refused is not None
        assert "UTF-8" in refused


@given(surrogate=st.integers(0xD800, 0xDFFF), where=st.sampled_from(["lineage", "outputs"]))
def test_a_lone_surrogate_escape_is_refused(surrogate: int, where: str) -> None:
    escape = f"\\u{surrogate:04x}"
    if where == "lineage":
        data = _doc(lineage="@").replace(b'"@"', f'"{escape}"'.encode())
    else:
        data = _doc(outputs={"o": {"value": "@", "type": "string"}}).replace(
            b'"@"', f'"x{escape}"'.encode()
        )
    refused = _verdict(data)
    assert refused is not None and "surrogate" in refused


def test_a_surrogate_pair_and_an_escaped_backslash_are_text() -> None:
    assert _verdict(_doc(lineage="\U0001f600", extra="\\ud800")) is None


def _case_variants(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True))
    )


@given(key=_case_variants("serial"), serial=st.sampled_from([-1, 2**64, 10**30, "7", 1.5]))
def test_field_names_match_case_insensitively_as_in_go(key: str, serial: Any) -> None:
    # The last match in the document wins: Go assigns each member in order.
    data = json.dumps({**BASE, "serial": 1, key: serial}).encode()
    assert _verdict(data) is not None


# Top-level variations, each a value Terraform reads or refuses on its own.
_TOP = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from([4, 0, 5, -1, 4.0, "4", None]),
        "serial": st.sampled_from([0, 1, 2**63, 2**64 - 1, 2**64, -1, 1.5, "1", None, True]),
        "lineage": st.sampled_from(["", "l1", 7, None, ["l"]]),
        "terraform_version": st.sampled_from(
            ["1.15.0", "", "v1.2.3-beta1+meta", "x", "1.2.", 15, None, "99999999999999999999.0"]
        ),
        "outputs": st.sampled_from([{}, None, [], "x", 1]),
        "resources": st.sampled_from([[], None, {}, "x"]),
        "check_results": st.sampled_from([None, [], {}, 1]),
        "Serial": st.sampled_from([2, 2**64]),
        "LINEAGE": st.sampled_from(["other", 3]),
    },
)


@pytest.fixture(scope="module")
def terraform_dir(tmp_path_factory: pytest.TempPathFactory) -> Terraform:
    return Terraform(tmp_path_factory.mktemp("statedoc"))


def _terraform_reads(tf: Terraform, data: bytes, n: int) -> bool:
    path = tf.workdir / f"s{n}.tfstate"
    path.write_bytes(data)
    result = tf.run("show", "-json", "-no-color", str(path), timeout=120)
    return result.returncode == 0


_COUNTER = iter(range(10**9))


@pytest.mark.terraform
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fields=_TOP, bom=st.booleans())
@example(fields={"serial": 2**64}, bom=False)
@example(fields={"Serial": 2**64}, bom=False)
# Go keeps the error of a bad value even when a later key of the same name replaces it.
@example(fields={"serial": 2**64, "Serial": 2}, bom=False)
@example(fields={"lineage": 3, "LINEAGE": "other"}, bom=False)
@example(fields={"serial": 2**64 - 1}, bom=False)
@example(fields={"terraform_version": "x"}, bom=False)
@example(fields={}, bom=True)
def test_we_accept_exactly_what_terraform_reads(
    terraform_dir: Terraform, fields: dict[str, Any], bom: bool
) -> None:
    doc = {k: v for k, v in BASE.items() if k not in {f.lower() for f in fields}}
    doc.update(fields)
    data = (b"\xef\xbb\xbf" if bom else b"") + json.dumps(doc, indent=2).encode()
    ours = _verdict(data) is None
    theirs = _terraform_reads(terraform_dir, data, next(_COUNTER))
    assert ours == theirs, (doc, bom, _verdict(data))


def test_a_state_terraform_writes_is_accepted_at_full_size(tmp_path: Path) -> None:
    resources = [
        {
            "mode": "managed",
            "type": "terraform_data",
            "name": f"r{i}",
            "provider": 'provider["terraform.io/builtin/terraform"]',
            "instances": [{"schema_version": 0, "attributes": {"id": str(i)}}],
        }
        for i in range(2000)
    ]
    data = _doc(resources=resources, serial=MAX_SERIAL)
    assert _verdict(data) is None
    assert StateDoc.parse(data, keep_document=False).serial == MAX_SERIAL
