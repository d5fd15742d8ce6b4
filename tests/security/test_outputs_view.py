"""The outputs-only view: only what terraform_remote_state reads, for every state format.

Property tests generate states of format 1 to 4 with resources, non-root
modules, backend blocks and unknown keys at every level, each carrying a
marker; the view must hold only the allowed keys, keep the root outputs, and
never the marker. A real server then serves states of each format to an
outputs-only token on every route that returns state content.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.security.support import basic, make_tokens

from statekeeper.terraform.remote_state import outputs_only
from statekeeper.terraform.statedoc import StateDoc
from statekeeper.testing.processes import StatekeeperServer

MARK = "LEAKED-MARKER"
JUNK_KEYS = st.sampled_from(["remote", "backend", "check_results", "x_future", "resources", "ms"])
JUNK = st.dictionaries(JUNK_KEYS, st.just({"secret": MARK}), max_size=3)
NAMES = st.text(alphabet="abcdef_", min_size=1, max_size=6)

ALLOWED_TOP = {
    1: {"version", "serial", "modules"},
    2: {"version", "terraform_version", "serial", "lineage", "modules"},
    3: {"version", "terraform_version", "serial", "lineage", "modules"},
    4: {"version", "terraform_version", "serial", "lineage", "outputs", "resources"},
}


@st.composite
def typed_outputs(draw: st.DrawFn) -> dict[str, Any]:
    outputs = {}
    for name in draw(st.lists(NAMES, max_size=4, unique=True)):
        out: dict[str, Any] = {"value": draw(st.sampled_from(["v", 1, ["a"], {"k": "v"}]))}
        out["type"] = "string"
        if draw(st.booleans()):
            out["sensitive"] = True
        outputs[name] = {**out, **draw(JUNK)}
    return outputs


@st.composite
def states(draw: st.DrawFn) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """A state of some format with junk everywhere, and the root outputs it holds."""
    version = draw(st.integers(1, 4))
    top: dict[str, Any] = {"version": version, "serial": draw(st.integers(0, 2**63 - 1))}
    if version > 1:
        top |= {"terraform_version": "0.11.14", "lineage": "9a1d-lineage"}
    resource = {"type": "aws_db", "primary": {"attributes": {"password": MARK}}}
    if version == 4:
        outputs = draw(typed_outputs())
        top |= {
            "outputs": outputs,
            "resources": [{"mode": "managed", "type": "t", "name": MARK, "instances": []}],
        }
    else:
        if version == 1:
            outputs = {n: "v" for n in draw(st.lists(NAMES, max_size=4, unique=True))}
            root_outputs: dict[str, Any] = {**outputs, "not_a_string": {"secret": MARK}}
        else:
            outputs = draw(typed_outputs())
            root_outputs = outputs
        modules = [
            {"path": ["root"], "outputs": root_outputs, "resources": {"aws_db.x": resource}},
            {"path": ["root", "child"], "outputs": {"o": MARK}, "resources": {}},
        ]
        modules = [{**m, **draw(JUNK)} for m in draw(st.permutations(modules))]
        top["modules"] = modules
    return version, {**top, **draw(JUNK)}, outputs


def _expected_outputs(version: int, outputs: dict[str, Any]) -> dict[str, Any]:
    if version == 1:
        return outputs
    keep = {"value", "type", "sensitive"}
    return {n: {k: v for k, v in o.items() if k in keep} for n, o in outputs.items()}


@settings(max_examples=300, deadline=None)
@given(states())
def test_the_view_holds_only_what_terraform_remote_state_reads(
    case: tuple[int, dict[str, Any], dict[str, Any]],
) -> None:
    version, doc, outputs = case
    data = json.dumps(doc).encode()
    view_bytes = outputs_only(data)
    assert MARK not in view_bytes.decode()
    view = json.loads(view_bytes)
    assert set(view) <= ALLOWED_TOP[version]
    parsed = StateDoc.parse(view_bytes)
    assert (parsed.serial, parsed.format_version) == (doc["serial"], version)
    if version == 4:
        assert view["resources"] == []
        root = view["outputs"]
    else:
        (module,) = view["modules"]
        assert set(module) == {"path", "outputs", "resources"}
        assert module["path"] == ["root"] and module["resources"] == {}
        root = module["outputs"]
    assert root == _expected_outputs(version, outputs)
    for o in root.values() if version > 1 else []:
        assert set(o) <= {"value", "type", "sensitive"}


# -- On a real server, every route that returns state content. -------------------------------


V3 = {
    "version": 3,
    "terraform_version": "0.11.14",
    "serial": 4,
    "lineage": "0e1c-old",
    "backend": {"type": "s3", "config": {"secret_key": MARK}},
    "modules": [
        {
            "path": ["root"],
            "outputs": {"endpoint": {"sensitive": False, "type": "string", "value": "db.test"}},
            "resources": {"aws_db.x": {"type": "aws_db", "primary": {"attributes": {"p": MARK}}}},
            "depends_on": [],
        }
    ],
}
V4 = {
    "version": 4,
    "terraform_version": "1.15.0",
    "serial": 1,
    "lineage": "0e1c-new",
    "outputs": {"endpoint": {"value": "db.test", "type": "string"}},
    "resources": [],
    "future_top_level_key": {"secret": MARK},
    "check_results": None,
}


class Server:
    def __init__(self, server: StatekeeperServer, secrets: dict[str, str]) -> None:
        self.server = server
        self.secrets = secrets

    def get(self, role: str, path: str, **params: str) -> httpx.Response:
        return httpx.get(
            self.server.url + path, params=params, headers=basic(role, self.secrets[role])
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir: Path = tmp_path_factory.mktemp("outputs-view")
    secrets = make_tokens(workdir, {"root": ["**:admin"], "consumer": ["net/*:outputs"]})
    server = StatekeeperServer(workdir, env={"STATEKEEPER_RATE_LIMIT": "0"}).start()
    try:
        for name, doc in (("net/v3.tfstate", V3), ("net/v4.tfstate", V4)):
            body = json.dumps(doc).encode()
            r = httpx.post(
                server.state_url(name), content=body, headers=basic("root", secrets["root"])
            )
            assert r.status_code == 200, r.text
        yield Server(server, secrets)
    finally:
        server.stop()


@pytest.mark.parametrize("name", ["net/v3.tfstate", "net/v4.tfstate"])
def test_every_route_gives_an_outputs_only_caller_the_view(served: Server, name: str) -> None:
    bodies = {
        "terraform GET": served.get("consumer", f"/state/{name}"),
        "API content": served.get("consumer", f"/api/v1/content/{name}"),
        "API show": served.get("consumer", f"/api/v1/states/{name}"),
    }
    for route, r in bodies.items():
        assert r.status_code == 200, (route, r.text)
        assert MARK not in r.text, route
        assert "db.test" in r.text, route
    assert bodies["terraform GET"].content == bodies["API content"].content
    # What needs more than the outputs is refused, not stripped.
    for path in (f"/api/v1/versions/{name}", f"/api/v1/diff/{name}"):
        assert served.get("consumer", path).status_code == 403, path
    # The full state is still there for a reader.
    assert MARK in served.get("root", f"/state/{name}").text
