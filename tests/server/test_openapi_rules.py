"""The OpenAPI document states the input rules the server checks, and states them truly.

For each rule a table of values the server takes and refuses: the pattern the
document publishes (read from the document, not from the constants it is built
from) must agree with the server's own check on every one, in Python's ``re``
(what schemathesis and hypothesis generate with) and in ECMA-262 with the ``u``
flag (what JSON Schema patterns are, run by Playwright's own Node). Values past a
limit no pattern can say (a duration's hundred years) match the pattern, and the
description names the limit.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import playwright
import pytest
from tfwire import Api

from statekeeper.app import Services
from statekeeper.errors import BadRequest
from statekeeper.security.audit import AuditFilter
from statekeeper.security.grants import parse_grant
from statekeeper.security.tokens import issue, validate_token_name
from statekeeper.server.app import create_app
from statekeeper.state.globs import literal_prefix, parse_glob
from statekeeper.state.inspection import resolve_version
from statekeeper.state.version import StateVersion
from statekeeper.terraform.names import StateName
from statekeeper.times import parse_duration


def _takes(check: Callable[[str], object]) -> Callable[[str], bool]:
    def takes(value: str) -> bool:
        try:
            check(value)
        except BadRequest:  # InvalidStateName is one
            return False
        return True

    return takes


_VERSIONS = [
    StateVersion("team/app.tfstate", "7", 1, datetime(2026, 1, 1, tzinfo=UTC), serial=7),
]


def _version_ref(ref: str) -> object:
    try:
        return resolve_version(_VERSIONS, ref)
    except BadRequest:
        raise
    except Exception:  # noqa: BLE001 - a ref naming no version (404) is well formed
        return None


def _audit_action(action: str) -> object:
    return AuditFilter(action=action)


@dataclass
class Rule:
    name: str
    check: Callable[[str], bool]
    #: (method, path, "query"/"path" parameter name, or "Model.field" of a body)
    places: list[tuple[str, str, str]]
    valid: list[str]
    invalid: list[str]
    #: Match the pattern, refused for a limit the description names (the second item).
    beyond: list[tuple[str, str]] = field(default_factory=list)


_NAMED = [
    (method, path, "name")
    for method, path in [
        ("get", "/api/v1/states/{name}"),
        ("get", "/api/v1/versions/{name}"),
        ("get", "/api/v1/content/{name}"),
        ("put", "/api/v1/content/{name}"),
        ("get", "/api/v1/diff/{name}"),
        ("post", "/api/v1/rollback/{name}"),
        ("delete", "/api/v1/locks/{name}"),
        ("post", "/api/v1/trash/restore/{name}"),
        ("delete", "/api/v1/trash/{name}"),
    ]
]

RULES = [
    Rule(
        "state name",
        _takes(StateName),
        _NAMED,
        valid=["team/app.tfstate", "a", "env:/prod/x.tfstate", "a/.../b", ".hidden", "a=b+c"],
        invalid=[
            "",
            "a//b",
            "/a",
            "a/",
            "a/./b",
            "a/..",
            "..",
            "a b",
            "é",
            "a\n",
            "a/b\x00",
            "team/app.tfstate.tflock",
            "team/app.tfstate-md5",
            "statekeeper!/audit",
            "a!b",
            ".statekeeper-doctor/probe",
            "x" * 1025,
        ],
    ),
    Rule(
        "state glob",
        _takes(parse_glob),
        [("get", "/api/v1/audit", "state")],
        valid=["**", "team/**", "*/prod.tfstate", " team/* ", "a?c", "a*b*c", "**/x", "a/**/b"],
        invalid=["", "team/", "/a", "a//b", "a**", "***", "[ab]", "a b", "é", "a\n/b", "**/"],
    ),
    Rule(
        "prefix",
        _takes(literal_prefix),
        [
            ("get", "/api/v1/states", "prefix"),
            ("get", "/api/v1/locks", "prefix"),
            ("get", "/api/v1/trash", "prefix"),
            ("post", "/api/v1/reap", "ReapIn.prefix"),
            ("post", "/api/v1/prune", "PruneIn.prefix"),
        ],
        valid=["", "team/", "team/app", "a b\n"],
        invalid=["team/*", "?", "a[b]", "x\n*"],
    ),
    Rule(
        "duration",
        _takes(parse_duration),
        [("post", "/api/v1/reap", "ReapIn.older_than")],
        valid=["0s", "30s", "1h30m", "1W2D3H4M5S", " 2d ", "1h\n", "36500d", "00m"],
        invalid=["", " ", "5", "h", "1m1h", "1.5h", "-1h", "1h 30m", "1y"],
        beyond=[("36501d", "36500 days")],
    ),
    Rule(
        "token lifetime",
        _takes(lambda text: issue("ci", ["**:read"], parse_duration(text))),
        [("post", "/api/v1/tokens", "TokenRequest.expires")],
        valid=["90d", "1s", "0h1s", "00d10m", " 12h "],
        invalid=["0s", "00h0m", "0w0d0h0m0s", "", "1m1h", "-1d"],
        beyond=[("36501d", "36500 days")],
    ),
    Rule(
        "token name",
        _takes(validate_token_name),
        [
            ("post", "/api/v1/tokens", "TokenRequest.name"),
            ("delete", "/api/v1/tokens/{name}", "name"),
        ],
        valid=["ci", "x.y_z-1", "A" * 64, "anonymous2", "oidc-ci"],
        invalid=["", "-x", ".x", "a b", "a:b", "é", "x\n", "A" * 65, "Anonymous", "OIDC"],
    ),
    Rule(
        "grant",
        _takes(parse_grant),
        [("post", "/api/v1/tokens", "TokenRequest.scopes[]")],
        valid=["**:admin", "team/*:write", " a:b:READ ", "team/**: outputs", "**:metrics"],
        invalid=["", "read", ":read", "team/**:", "team/** :read", "team/:read", "x:own", "a:b\n;"],
    ),
    Rule(
        "version ref",
        _takes(_version_ref),
        [
            ("get", "/api/v1/states/{name}", "version"),
            ("get", "/api/v1/content/{name}", "version"),
            ("get", "/api/v1/diff/{name}", "from"),
            ("get", "/api/v1/diff/{name}", "to"),
            ("post", "/api/v1/rollback/{name}", "RollbackIn.to"),
        ],
        valid=["current", "latest", "7", "serial:7", "serial:0", "serial:8", "abc", "serialx"],
        invalid=["serial:", "serial:07", "serial:-1", "serial: 7", "serial:7\n", "serial:\u0667"],
    ),
]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("openapi") / "data"
    from statekeeper.settings import load_settings

    services = Services.build(load_settings({"data_dir": data}, env={}))
    try:
        yield create_app(services).openapi()
    finally:
        services.close()


def _string_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The string branch of ``T | None``."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            return dict(branch)
    raise AssertionError(f"no string in {schema}")


def _schema_at(document: dict[str, Any], place: tuple[str, str, str]) -> dict[str, Any]:
    method, path, where = place
    if "." in where:
        model, prop = where.split(".")
        properties = document["components"]["schemas"][model]["properties"]
        if prop.endswith("[]"):
            return _string_schema(properties[prop.removesuffix("[]")]["items"])
        return _string_schema(properties[prop])
    for parameter in document["paths"][path][method]["parameters"]:
        if parameter["name"] == where:
            return _string_schema(parameter["schema"])
    raise AssertionError(f"{method.upper()} {path} has no parameter {where}")


def _rule_schema(document: dict[str, Any], rule: Rule) -> dict[str, Any]:
    """The schema every place of ``rule`` publishes: one, the same everywhere."""
    schemas = [_schema_at(document, place) for place in rule.places]
    for place, schema in zip(rule.places, schemas, strict=True):
        assert "pattern" in schema, (rule.name, place, schema)
        assert schema["pattern"] == schemas[0]["pattern"], (rule.name, place)
    return schemas[0]


def _published(schema: dict[str, Any], value: str) -> bool:
    """What a JSON Schema validator says of ``value``, with Python's ``re``."""
    if len(value) > schema.get("maxLength", len(value)):
        return False
    return re.search(schema["pattern"], value) is not None


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_the_published_pattern_agrees_with_the_servers_check(
    document: dict[str, Any], rule: Rule
) -> None:
    schema = _rule_schema(document, rule)
    for value in rule.valid:
        assert rule.check(value), (rule.name, value, "the table is wrong: the server refuses it")
        assert _published(schema, value), (rule.name, value, "the server takes it", schema)
    for value in rule.invalid:
        assert not rule.check(value), (rule.name, value, "the table is wrong: the server takes it")
        assert not _published(schema, value), (rule.name, value, "the server refuses it", schema)
    for value, limit in rule.beyond:
        assert not rule.check(value), (rule.name, value)
        assert _published(schema, value), (rule.name, value)
        assert limit in schema["description"], (rule.name, limit, schema["description"])


def test_the_published_patterns_mean_the_same_in_ecma_262(document: dict[str, Any]) -> None:
    """JSON Schema patterns are ECMA-262: each, compiled with the ``u`` flag as JSON
    Schema validators compile them, answers every example as Python's ``re`` does."""
    cases = [
        {"pattern": _rule_schema(document, rule)["pattern"], "value": value}
        for rule in RULES
        for value in rule.valid + rule.invalid + [v for v, _ in rule.beyond]
    ]
    script = (
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(cases.map(c => new RegExp(c.pattern, 'u').test(c.value))));"
    )
    node = Path(playwright.__file__).parent / "driver" / "node"
    run = subprocess.run(
        [str(node), "-e", script], input=json.dumps(cases), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    for case, ecma in zip(cases, json.loads(run.stdout), strict=True):
        python = re.search(case["pattern"], case["value"]) is not None
        assert ecma == python, case


def test_audit_actions_are_published_as_the_closed_set_the_server_takes(
    document: dict[str, Any],
) -> None:
    schema = _schema_at(document, ("get", "/api/v1/audit", "action"))
    for action in schema["enum"]:
        AuditFilter(action=action)
    with pytest.raises(BadRequest):
        _audit_action("login")
    assert "login" not in schema["enum"]


def test_the_search_query_publishes_its_length(document: dict[str, Any]) -> None:
    from statekeeper.inventory.query import MAX_QUERY, parse_query

    schema = _schema_at(document, ("get", "/api/v1/search", "q"))
    assert schema["maxLength"] == MAX_QUERY
    parse_query("x" * MAX_QUERY)
    with pytest.raises(BadRequest):
        parse_query("x" * (MAX_QUERY + 1))


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("/api/v1/states/a//b", "invalid_state_name"),
        ("/api/v1/versions/team/app.tfstate.tflock", "invalid_state_name"),
        ("/api/v1/states?prefix=team/*", "bad_request"),
        ("/api/v1/audit?state=team/", "bad_request"),
        ("/api/v1/audit?action=login", "bad_request"),
    ],
)
def test_a_value_breaking_a_published_rule_is_refused_by_the_rules_own_check(
    api: Api, url: str, code: str
) -> None:
    """The patterns are for the document only: the refusal is the rule's, in its words,
    not pydantic's "String should match pattern"."""
    answer = api.request("GET", url)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == code, body
    assert "pattern" not in body["message"], body


@pytest.mark.parametrize("name", ["a%20b", "-x", "oidc", "A" * 65])
def test_a_token_name_breaking_the_published_rule_names_no_token(api: Api, name: str) -> None:
    """No token has such a name (creating one checks the rule, and so does reading a
    tokens file): revoking it is a 404 saying so, not pydantic's 422."""
    answer = api.request("DELETE", f"/api/v1/tokens/{name}")
    assert answer.status_code == 404, answer.text
    body = answer.json()
    assert body["error"] == "not_found", body
    assert "there is no token named" in body["message"], body


def test_every_doc_section_a_description_names_exists(document: dict[str, Any]) -> None:
    docs = Path(__file__).parents[2] / "docs"
    named = set(re.findall(r"docs/([a-z]+\.md)#([a-z0-9-]+)", json.dumps(document)))
    assert len(named) >= 8
    for page, anchor in named:
        assert f'<a id="{anchor}"></a>' in (docs / page).read_text(), (page, anchor)
