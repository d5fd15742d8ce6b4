"""OIDC logins against a locally generated key pair published in a JWKS file."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.security.support import basic, bearer, state_json

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform

ISSUER = "https://token.actions.example.test"
AUDIENCE = "statekeeper"
KID = "ci-key-1"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    """The issuer's key, and an impostor's."""
    return _key(), _key()


def _jwks(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=KID, use="sig", alg="RS256")
    return {"keys": [jwk]}


def _token(key: rsa.RSAPrivateKey, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "repo:org/infra:ref:refs/heads/main",
        "repository": "org/infra",
        "ref": "refs/heads/main",
        "run_id": "4242",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})


@pytest.fixture
def server(
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
) -> StatekeeperServer:
    conf = tmp_path / "oidc"
    conf.mkdir()
    (conf / "jwks.json").write_text(json.dumps(_jwks(keys[0])))
    (conf / "oidc.toml").write_text(
        f"""
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_file = "jwks.json"
audit_claims = ["repository", "run_id"]

[[rules]]
claim = {{ repository = "org/infra", ref = "refs/heads/*" }}
scope = "team/*:write"

[[rules]]
claim = {{ repository = "org/*" }}
scopes = ["shared/**:outputs"]
"""
    )
    return serve("--oidc-config", str(conf / "oidc.toml"), env={"STATEKEEPER_RATE_LIMIT": "0"})


def test_valid_jwt_as_bearer_and_as_basic_password(
    server: StatekeeperServer, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    token = _token(keys[0])
    url = server.state_url("team/app.tfstate")
    assert httpx.post(url, content=state_json(1), headers=bearer(token)).status_code == 200
    assert httpx.get(url, headers=basic("oidc", token)).status_code == 200
    # The rules grant nothing on other states.
    r = httpx.get(server.state_url("ops/app.tfstate"), headers=bearer(token))
    assert r.status_code == 403
    assert "'outputs' permission" in r.json()["message"]  # the least that would do
    # A workflow of another repository of the org only gets shared outputs.
    other = _token(keys[0], repository="org/web", sub="repo:org/web:ref:refs/heads/main")
    assert httpx.get(url, headers=bearer(other)).status_code == 403


def test_audit_names_the_subject_and_claims(
    server: StatekeeperServer, keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]
) -> None:
    token = _token(keys[0])
    url = server.state_url("team/app.tfstate")
    assert httpx.post(url, content=state_json(1), headers=bearer(token)).status_code == 200
    # Server-level actions need '**:admin', which no rule grants.
    r = httpx.get(server.url + "/api/v1/audit", headers=bearer(token))
    assert r.status_code == 403
    # The operator reads the trail with the CLI, on the same database.
    from statekeeper.app import Services
    from statekeeper.security.audit import AuditFilter
    from statekeeper.settings import load_settings

    services = Services.build(load_settings({"data_dir": server.workdir / ".statekeeper"}, env={}))
    try:
        events = services.audit.query(AuditFilter(action="write"))
    finally:
        services.close()
    assert len(events) == 1
    e = events[0]
    assert e.actor == "oidc:repo:org/infra:ref:refs/heads/main"
    assert e.claims == {"repository": "org/infra", "run_id": "4242"}
    assert (e.state, e.outcome, e.serial) == ("team/app.tfstate", "ok", 1)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", "has expired"),
        ("wrong-audience", "audience must be 'statekeeper'"),
        ("wrong-issuer", "was not issued by"),
        ("wrong-signature", "signature does not verify"),
        ("tampered", "signature does not verify"),
        ("garbage", "not valid"),
    ],
)
def test_bad_jwts_are_refused(
    server: StatekeeperServer,
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
    case: str,
    message: str,
) -> None:
    issuer_key, impostor = keys
    if case == "expired":
        past = int(time.time()) - 3600
        token = _token(issuer_key, iat=past - 600, nbf=past - 600, exp=past)
    elif case == "wrong-audience":
        token = _token(issuer_key, aud="someone-else")
    elif case == "wrong-issuer":
        token = _token(issuer_key, iss="https://evil.example.test")
    elif case == "wrong-signature":
        token = _token(impostor)
    elif case == "tampered":
        head, payload, sig = _token(issuer_key).split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["repository"] = "org/infra-but-not"
        forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        token = f"{head}.{forged}.{sig}"
    else:
        token = "eyJub3QganNvbg.e30.c2ln"  # the header is not JSON
    for headers in (bearer(token), basic("ci", token)):
        r = httpx.get(server.state_url("team/app.tfstate"), headers=headers)
        assert r.status_code == 401, r.text
        assert message in r.json()["message"]


@pytest.mark.terraform
def test_terraform_with_a_jwt_as_password(
    server: StatekeeperServer,
    keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey],
    terraform: Callable[..., Terraform],
) -> None:
    tf = terraform()
    tf.write(
        server.backend_block("team/ci.tfstate", username="github-actions")
        + 'resource "terraform_data" "a" { input = "x" }\n'
    )
    env = {"TF_HTTP_PASSWORD": _token(keys[0])}
    tf.run("init", env=env).check()
    tf.run("apply", env=env).check()
    r = httpx.get(server.state_url("team/ci.tfstate"), headers=bearer(_token(keys[0])))
    assert r.json()["resources"][0]["name"] == "a"
