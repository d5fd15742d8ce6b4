"""The resources of ``state.written``: the incremental parse answers what a full parse
of both versions answers, and parses only the elements that changed."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest

from statekeeper.hooks.resources import ResourceIndex
from statekeeper.hooks.samebytes import same_end, same_start
from statekeeper.state.diff import attributes_of, instance_objects, status_of


def full_parse(old: bytes | None, new: bytes) -> dict[str, list[str]] | None:
    """The resources as the worker reported them before it kept anything: both versions
    parsed in full, instances compared."""
    parsed = []
    for data in (old, new):
        doc = json.loads(data) if data is not None else {}
        if "encrypted_data" in doc or "encryption_version" in doc:
            return None
        parsed.append({a: (attributes_of(i), status_of(i)) for a, i in instance_objects(doc)})
    before, after = parsed
    return {
        "added": sorted(set(after) - set(before)),
        "changed": [a for a in sorted(set(before) & set(after)) if before[a] != after[a]],
        "removed": sorted(set(before) - set(after)),
    }


def resource(i: int, rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["plain", "module", "data", "counted", "keyed", "deposed"])
    res: dict[str, Any] = {
        "mode": "data" if kind == "data" else "managed",
        "type": "terraform_data",
        "name": f"r{i}",
        "provider": 'provider["terraform.io/builtin/terraform"]',
        "instances": [{"schema_version": 0, "attributes": {"id": str(i), "input": "x" * 40}}],
    }
    if kind == "module":
        res["module"] = f"module.m{i % 3}"
    if kind == "counted":
        res["instances"] = [
            {"index_key": k, "attributes": {"id": f"{i}-{k}"}, "sensitive_attributes": []}
            for k in range(3)
        ]
    if kind == "keyed":
        res["instances"] = [{"index_key": "a b", "attributes": {"id": "k", "n": 1.5}}]
    if kind == "deposed":
        res["instances"].append({"deposed": "0badcafe", "attributes": {"id": "old"}})
    return res


def document(serial: int, resources: list[dict[str, Any]], lineage: str = "L1") -> dict[str, Any]:
    return {
        "version": 4,
        "terraform_version": "1.9.0",
        "serial": serial,
        "lineage": lineage,
        "outputs": {"o": {"value": serial, "type": "number"}},
        "resources": resources,
        "check_results": None,
    }


def dump(doc: dict[str, Any], indent: int | None = 2) -> bytes:
    return json.dumps(doc, indent=indent).encode()


def mutate(doc: dict[str, Any], rng: random.Random, fresh: int) -> dict[str, Any]:
    """The next version: the serial up and a few of the edits Terraform makes."""
    doc = copy.deepcopy(doc)
    doc["serial"] += rng.choice([1, 1, 1, 7, 95])  # sometimes a digit more
    res = doc["resources"]
    for _ in range(rng.randint(0, 3)):
        edit = rng.choice(["change", "add", "remove", "status", "move", "twin"])
        if edit == "add" or not res:
            res.insert(rng.randint(0, len(res)), resource(fresh, rng))
            fresh += 1
        elif edit == "change":
            inst = rng.choice(res)["instances"][0]
            inst["attributes"]["input"] = "y" * rng.randint(1, 60)
        elif edit == "remove":
            res.pop(rng.randrange(len(res)))
        elif edit == "status":
            rng.choice(res)["instances"][0]["status"] = "tainted"
        elif edit == "move":
            res.insert(rng.randint(0, len(res) - 1), res.pop(rng.randrange(len(res))))
        else:  # an address twice: the later one counts, as in a full parse
            res.insert(rng.randint(0, len(res)), copy.deepcopy(rng.choice(res)))
    return doc


def test_a_chain_of_versions_matches_the_full_parse() -> None:
    rng = random.Random(14)
    for chain in range(30):
        index = ResourceIndex()
        doc = document(rng.choice([1, 8, 9, 98]), [resource(i, rng) for i in range(12)])
        indent = rng.choice([2, None])
        versions = {"v0": dump(doc, indent)}
        assert index.changes("s", None, "v0", versions.get) == full_parse(None, versions["v0"])
        for n in range(1, 15):
            doc = mutate(doc, rng, fresh=100 * n)
            versions[f"v{n}"] = dump(doc, indent)
            got = index.changes("s", f"v{n - 1}", f"v{n}", versions.get)
            assert got == full_parse(versions[f"v{n - 1}"], versions[f"v{n}"]), (chain, n)


def test_only_the_changed_elements_are_parsed() -> None:
    rng = random.Random(1)
    resources = [resource(i, rng) for i in range(50)]
    versions = {"a": dump(document(9, resources))}
    index = ResourceIndex()
    index.changes("s", None, "a", versions.get)
    assert index.parsed == 50

    # The serial a digit longer, one resource changed in the middle.
    changed = copy.deepcopy(resources)
    changed[20]["instances"][0]["attributes"]["input"] = "new"
    versions["b"] = dump(document(10, changed))
    result = index.changes("s", "a", "b", versions.get)
    assert result == {"added": [], "changed": addresses(changed[20]), "removed": []}
    assert index.parsed == 1

    # Nothing but the serial: nothing parsed.
    versions["c"] = dump(document(11, changed))
    assert index.changes("s", "b", "c", versions.get) == {"added": [], "changed": [], "removed": []}
    assert index.parsed == 0


def addresses(res: dict[str, Any]) -> list[str]:
    return sorted(a for a, _ in instance_objects({"resources": [res]}))


@pytest.mark.parametrize("case", ["not kept", "rollback", "lineage"])
def test_a_previous_version_not_kept_is_read(case: str) -> None:
    rng = random.Random(2)
    v1 = document(1, [resource(i, rng) for i in range(6)])
    v2 = mutate(v1, rng, fresh=50)
    v2["resources"][0]["instances"][0]["attributes"]["input"] = "changed"
    versions = {"v1": dump(v1), "v2": dump(v2)}
    index = ResourceIndex()
    if case == "not kept":
        # A worker that never saw v1 (restarted, or v1 was written by another server).
        got = index.changes("s", "v1", "v2", versions.get)
        assert got == full_parse(versions["v1"], versions["v2"])
        assert got is not None and got["changed"]
        return
    index.changes("s", None, "v1", versions.get)
    index.changes("s", "v1", "v2", versions.get)
    if case == "rollback":
        # A rollback stores v1's content as a new version v3 (no state.written of its
        # own): the next write's previous version is v3, which the index never saw.
        versions["v3"] = versions["v1"]
        v4 = copy.deepcopy(v1)
        v4["serial"] = 4
        v4["resources"].pop()
        versions["v4"] = dump(v4)
        got = index.changes("s", "v3", "v4", versions.get)
        assert got == full_parse(versions["v3"], versions["v4"])
        assert got is not None and got["removed"] == addresses(v1["resources"][-1])
    else:
        # A new lineage (the state replaced): compared with the version before all the same.
        other = document(1, [resource(i, rng) for i in range(3, 9)], lineage="L2")
        versions["v3"] = dump(other)
        got = index.changes("s", "v2", "v3", versions.get)
        assert got == full_parse(versions["v2"], versions["v3"])


def test_encrypted_and_odd_documents() -> None:
    encrypted = json.dumps({"serial": 1, "encrypted_data": "abc", "encryption_version": "v0"})
    versions = {
        "plain": dump(document(1, [])),
        "enc": encrypted.encode(),
        "odd": b'{"resources": {"not": "a list"}, "serial": 3}',
        "twice": b'{"resources": [], "resources": [{"type": "t", "name": "n", "instances": '
        b'[{"attributes": {}}]}]}',
    }
    index = ResourceIndex()
    assert index.changes("s", "plain", "enc", versions.get) is None
    assert index.changes("s", "enc", "plain", versions.get) is None
    assert index.changes("s", "plain", "odd", versions.get) == full_parse(
        versions["plain"], versions["odd"]
    )
    assert index.changes("s", "odd", "twice", versions.get) == {
        "added": ["t.n"],
        "changed": [],
        "removed": [],
    }
    # A version gone: no resources, as before.
    assert index.changes("s", "gone", "twice", versions.get) == full_parse(None, versions["twice"])


def test_the_index_is_bounded() -> None:
    versions = {"v": dump(document(1, []))}
    index = ResourceIndex(states=3, chars=10 * len(versions["v"]))
    for i in range(10):
        index.changes(f"s{i}", None, "v", versions.get)
    assert list(index._kept) == ["s7", "s8", "s9"]
    small = ResourceIndex(states=10, chars=2 * len(versions["v"]))
    for i in range(5):
        small.changes(f"s{i}", None, "v", versions.get)
    assert list(small._kept) == ["s3", "s4"]


def edit_members(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The next version with the resources untouched: other members changed, added,
    removed or moved, in ASCII or not."""
    doc = copy.deepcopy(doc)
    doc["serial"] += rng.choice([1, 9, 95])
    for _ in range(rng.randint(0, 3)):
        edit = rng.choice(["output", "unicode", "lineage", "new", "drop", "first", "checks"])
        if edit == "output":
            doc["outputs"][f"o{rng.randint(0, 3)}"] = {"value": "v" * rng.randint(0, 9)}
        elif edit == "unicode":
            doc["outputs"]["u"] = {"value": rng.choice(["équipe", "\u2028", '"quoted", }'])}
        elif edit == "lineage":
            doc["lineage"] = rng.choice(["L1", "L22", ""])
        elif edit == "new":
            doc[rng.choice(["extra", "resourcez", "zz"])] = rng.choice([[], {"a": [1]}, None])
        elif edit == "drop":
            doc.pop(rng.choice(["extra", "check_results", "terraform_version"]), None)
        elif edit == "first":  # a member moved before all the others
            key = rng.choice(["lineage", "outputs"])
            doc = {key: doc.pop(key), **doc}
        else:
            doc["check_results"] = rng.choice([None, [{"status": "pass"}]])
    return doc


def test_a_version_differing_only_outside_the_resources_is_not_parsed() -> None:
    rng = random.Random(22)
    skipped = 0
    for chain in range(30):
        index = ResourceIndex()
        doc = document(rng.choice([1, 9, 98]), [resource(i, rng) for i in range(8)])
        indent = rng.choice([2, None])
        versions = {"v0": dump(doc, indent)}
        index.changes("s", None, "v0", versions.get)
        for n in range(1, 12):
            before, doc = doc, edit_members(doc, rng)
            if rng.random() < 0.2:  # now and then a resource too: parsed
                doc["resources"][0]["instances"][0]["attributes"]["input"] = f"i{n}"
            versions[f"v{n}"] = new = dump(doc, indent)
            old = versions[f"v{n - 1}"]
            got = index.changes("s", f"v{n - 1}", f"v{n}", versions.get)
            assert got == full_parse(old, new), (chain, n)
            # The resources the same, and the members that changed on one side of them.
            if before["resources"] == doc["resources"] and (old + new).isascii():
                sides = [_sides(before), _sides(doc)]
                if sides[0][0] == sides[1][0] or sides[0][1] == sides[1][1]:
                    assert index.read_whole == 0 and index.parsed == 0, (chain, n)
                    skipped += 1
    assert skipped > 150


def _sides(doc: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The members before the resources and those after them."""
    items = list(doc.items())
    at = list(doc).index("resources")
    return items[:at], items[at + 1 :]


def test_what_only_looks_like_another_member_is_parsed() -> None:
    plain = dump(document(1, [{"type": "t", "name": "a", "instances": [{"attributes": {}}]}]))
    versions = {
        "plain": plain,
        # A member renamed to "resources": the later one counts, as in a full parse.
        "renamed": plain.replace(b'"check_results"', b'"resources"'),
        # The same bytes again: nothing changed.
        "again": bytes(plain),
        # Encrypted now, in a member of its own.
        "enc": plain.replace(b'"check_results": null', b'"encrypted_data": "x"'),
    }
    index = ResourceIndex()
    index.changes("s", None, "plain", versions.get)
    assert index.changes("s", "plain", "renamed", versions.get) == full_parse(
        plain, versions["renamed"]
    )
    assert index.read_whole == 1
    assert index.changes("s", "renamed", "plain", versions.get) == full_parse(
        versions["renamed"], plain
    )
    assert index.changes("s", "plain", "again", versions.get) == {
        "added": [],
        "changed": [],
        "removed": [],
    }
    assert index.read_whole == 0
    assert index.changes("s", "again", "enc", versions.get) is None


def test_the_shared_start_and_end_of_two_versions_are_found_exactly() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        a = bytes(rng.choice(b"ab") for _ in range(rng.randint(0, 40)))
        b = bytearray(a)
        for _ in range(rng.randint(0, 3)):  # inserted, removed, replaced bytes
            at = rng.randint(0, len(b))
            edit = rng.choice("ird")
            if edit == "i":
                b[at:at] = bytes(rng.choice(b"abc") for _ in range(rng.randint(1, 4)))
            elif edit == "d":
                del b[at : at + rng.randint(1, 4)]
            elif b:
                b[min(at, len(b) - 1)] = rng.choice(b"abc")
        differ = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
        assert same_start(a, bytes(b)) == (differ[0] if differ else min(len(a), len(b)))
        floor = rng.randint(0, min(len(a), len(b)))
        end = 0
        while end < min(len(a), len(b)) - floor and a[-1 - end] == b[-1 - end]:
            end += 1
        assert same_end(a, bytes(b), floor) == end, (a, bytes(b), floor)
