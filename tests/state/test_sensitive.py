"""Sensitive values never reach a view: by path through every value encoding, and by value.

The property tests generate attribute trees with objects, maps, lists and
dynamically typed values (``{"value": …, "type": …}``), put secrets at any
depth, mark them the way Terraform does (or mark a container holding them),
copy some of them unmarked elsewhere (as ``terraform_data`` copies ``input``
to ``output``), and check that no view of one version or of a diff between
two shows any secret, as JSON or as the CLI prints it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from statekeeper.cli.history import _print_diff
from statekeeper.cli.output import console
from statekeeper.state.diff import describe_state, diff_states
from statekeeper.state.sensitive import Secrets, locations
from statekeeper.state.views import DiffView
from statekeeper.testing.statefiles import instance, state_bytes

Step = dict[str, Any]


def get_attr(name: str) -> Step:
    return {"type": "get_attr", "value": name}


def index(key: int | str) -> Step:
    kind = "number" if isinstance(key, int) else "string"
    return {"type": "index", "value": {"value": key, "type": kind}}


# -- A shape: a tree whose secret leaves get a value per version. ---------------------------


@dataclass(frozen=True)
class Leaf:
    value: Any


@dataclass(frozen=True)
class Secret:
    id: int


@dataclass(frozen=True)
class Obj:
    members: tuple[tuple[str, Any], ...]
    as_map: bool  # a map's keys are index steps, an object's attributes get_attr steps


@dataclass(frozen=True)
class Lst:
    items: tuple[Any, ...]


@dataclass(frozen=True)
class Dyn:
    inner: Any


KEYS = st.sampled_from(["a", "b", "password", "tags", "value", "type", "x y"])
PLAIN = st.one_of(
    st.none(), st.booleans(), st.integers(0, 9), st.text(alphabet="abc", max_size=3)
).map(Leaf)


def _shapes() -> st.SearchStrategy[Any]:
    counter = iter(range(10**9))
    secret = st.just(None).map(lambda _: Secret(next(counter)))
    return st.recursive(
        st.one_of(PLAIN, secret),
        lambda inner: st.one_of(
            st.builds(
                Obj,
                st.lists(st.tuples(KEYS, inner), max_size=4, unique_by=lambda kv: kv[0]).map(tuple),
                st.booleans(),
            ),
            st.lists(inner, max_size=4).map(tuple).map(Lst),
            inner.map(Dyn),
        ),
        max_leaves=12,
    )


def secret_value(sid: int, version: int) -> str:
    # Long ones are also searched for inside other strings; short ones only match whole.
    return f"s3cr3t-{sid}-v{version}" if sid % 3 else f"Q{sid}v{version}"


def build(shape: Any, version: int) -> Any:
    if isinstance(shape, Leaf):
        return shape.value
    if isinstance(shape, Secret):
        return secret_value(shape.id, version)
    if isinstance(shape, Obj):
        return {k: build(v, version) for k, v in shape.members}
    if isinstance(shape, Lst):
        return [build(v, version) for v in shape.items]
    assert isinstance(shape, Dyn)
    return {"value": build(shape.inner, version), "type": "dynamic"}


def secret_paths(shape: Any, steps: tuple[Step, ...] = ()) -> list[tuple[Step, ...]]:
    """Terraform's path to each secret: object and map keys, list indices; no wrapper steps."""
    if isinstance(shape, Secret):
        return [steps]
    if isinstance(shape, Obj):
        out = []
        for k, v in shape.members:
            step = index(k) if shape.as_map else get_attr(k)
            out += secret_paths(v, (*steps, step))
        return out
    if isinstance(shape, Lst):
        return [p for i, v in enumerate(shape.items) for p in secret_paths(v, (*steps, index(i)))]
    if isinstance(shape, Dyn):
        return secret_paths(shape.inner, steps)
    return []


def secrets_in(shape: Any) -> list[int]:
    if isinstance(shape, Secret):
        return [shape.id]
    if isinstance(shape, Obj):
        return [s for _, v in shape.members for s in secrets_in(v)]
    if isinstance(shape, Lst):
        return [s for v in shape.items for s in secrets_in(v)]
    if isinstance(shape, Dyn):
        return secrets_in(shape.inner)
    return []


@st.composite
def states(draw: st.DrawFn) -> tuple[bytes, bytes, list[str]]:
    """Two versions of one instance whose secrets all changed, and every secret value."""
    shape = draw(_shapes())
    marks = []
    for path in secret_paths(shape):
        # The secret itself, or any container holding it, is what the state marks.
        keep = draw(st.integers(1, len(path))) if path else 0
        marks.append(list(path[:keep]))
    wrapped = draw(st.booleans())

    def document(version: int) -> bytes:
        value = build(shape, version)
        attrs = {"input": {"value": value, "type": "dynamic"} if wrapped else value}
        # terraform_data's output: the same value, not marked.
        attrs["output"] = attrs["input"]
        sensitive = [[get_attr("input"), *m] for m in marks]
        ids = secrets_in(shape)
        outputs: dict[str, Any] = {"plain": {"value": "visible", "type": "string"}}
        if ids:
            leak = secret_value(ids[0], version)
            outputs["marked"] = {"value": leak, "type": "string", "sensitive": True}
            outputs["unmarked_copy"] = {"value": leak, "type": "string"}
        return state_bytes(
            version,
            resources=[instance("terraform_data", "db", attrs, sensitive=sensitive)],
            outputs=outputs,
        )

    everything = [secret_value(s, v) for s in secrets_in(shape) for v in (1, 2)]
    return document(1), document(2), everything


def _printed(view: DiffView) -> str:
    with console.capture() as captured:
        _print_diff(view)
    return captured.get()


def _assert_hidden(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert json.dumps(secret) not in text, secret
        if len(secret) >= 6:
            assert secret not in text, secret


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states())
def test_no_secret_in_any_view(case: tuple[bytes, bytes, list[str]]) -> None:
    old, new, secrets = case
    for d in (diff_states(old, new), diff_states(None, new), diff_states(new, old)):
        _assert_hidden(d.model_dump_json(), secrets)
        view = DiffView.between("team/app.tfstate", "1", "2", d)
        _assert_hidden(view.model_dump_json(), secrets)
        _assert_hidden(_printed(view), secrets)
    for data in (old, new):
        outputs = describe_state(data).outputs or {}
        _assert_hidden(json.dumps({k: o.model_dump() for k, o in outputs.items()}), secrets)


# -- Terraform's own encoding, as 1.15 writes it for terraform_data. --------------------------


def _terraform_data(password: str, user: str = "admin") -> dict[str, Any]:
    value = {"value": {"password": password, "user": user}, "type": ["object", {}]}
    return {"id": "42", "input": value, "output": value, "triggers_replace": None}


def test_a_path_through_a_dynamic_value_and_its_unmarked_copy_are_masked() -> None:
    marked = [[get_attr("input"), get_attr("password")]]
    old = state_bytes(
        1, resources=[instance("terraform_data", "db", _terraform_data("pw-one"), sensitive=marked)]
    )
    new = state_bytes(
        2,
        resources=[
            instance("terraform_data", "db", _terraform_data("pw-two", "root"), sensitive=marked)
        ],
    )
    (changed,) = diff_states(old, new).changed
    by_path = {c.path: c for c in changed.changes}
    assert set(by_path) == {
        "input.value.password",
        "input.value.user",
        "output.value.password",
        "output.value.user",
    }
    for path in ("input.value.password", "output.value.password"):
        assert by_path[path].model_dump() == {
            "path": path,
            "before": None,
            "after": None,
            "sensitive": True,
        }
    # What is not secret stays visible: masking is not blanket.
    assert by_path["input.value.user"].model_dump()["after"] == "root"
    assert not by_path["output.value.user"].sensitive


def test_locations_follow_lists_maps_and_set_elements() -> None:
    attrs = {
        "list": [{"value": ["a", "b"], "type": ["list", "string"]}],
        "tags": {"token": "t"},
        "set": ["x", "y"],
    }
    marks = [
        [get_attr("list"), index(0), index(1)],
        [get_attr("tags"), index("token")],
        [get_attr("set"), index("y")],  # a set element is named by its value
        [get_attr("gone"), get_attr("deeper")],
    ]
    found = set(locations(attrs, marks))
    assert ("list", 0, "value", 1) in found
    assert ("tags", "token") in found
    assert ("set",) in found, "a set element masks the whole set"
    assert ("gone", "deeper") in found, "where it would be, for the other side of a diff"
    assert locations(attrs, "not a list") == ((),), "unreadable marks mask everything"


def test_known_values_mask_equal_and_containing_values_only() -> None:
    secrets = Secrets()
    secrets.remember({"pw": "hunter22", "pin": "42", "flag": True, "none": None})
    assert secrets.hides("hunter22") and secrets.hides({"x": ["url://u:hunter22@h"]})
    assert secrets.hides("42") and not secrets.hides("1420"), "short ones match only whole"
    assert not secrets.hides(True) and not secrets.hides(None), "null and bools are no secrets"
