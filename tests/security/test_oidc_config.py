"""The OIDC config file: a misspelt key is refused by name, never dropped, and a
missing one is named, not a bare KeyError; ``serve`` reads it once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.security.conftest import pipe_written_once

from statekeeper.errors import ConfigError
from statekeeper.security.oidc import OidcConfig
from statekeeper.testing.processes import StatekeeperServer

GOOD = """issuer = "https://issuer.example"
audience = "statekeeper"
jwks_file = "jwks.json"
actor_claim = "sub"
audit_claims = ["repository"]

[[rules]]
claim = { repository = "org/infra" }
scopes = ["team/*:write"]

[browser]
client_id = "ui"
authorization_endpoint = "https://issuer.example/authorize"
token_endpoint = "https://issuer.example/token"
client_secret = "the-client-secret"
"""


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        ("audit_claims =", "audit_claim =", "the top level: unknown key(s) audit_claim"),
        ("actor_claim =", "actor_clam =", "the top level: unknown key(s) actor_clam"),
        ("scopes = [", "scopes_extra = [", "rules[0]: unknown key(s) scopes_extra"),
        ('audience = "statekeeper"\n', "", "the top level: audience is required"),
        ('issuer = "https://issuer.example"\n', "", "the top level: issuer is required"),
        ('client_id = "ui"\n', "", "[browser]: client_id is required"),
        ("client_secret =", "client_secrt =", "[browser]: unknown key(s) client_secrt"),
    ],
)
def test_a_misspelt_or_missing_key_is_named(tmp_path: Path, old: str, new: str, said: str) -> None:
    path = tmp_path / "oidc.toml"
    assert old in GOOD
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        OidcConfig.load(path)
    assert f"the OIDC config {path} is not valid: {said}" in err.value.message
    assert "the-client-secret" not in err.value.message


def test_the_good_config_loads(tmp_path: Path) -> None:
    path = tmp_path / "oidc.toml"
    path.write_text(GOOD)
    config = OidcConfig.load(path)
    assert config.audit_claims == ("repository",)
    assert config.browser is not None and config.browser.client_id == "ui"


def test_a_config_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "oidc.toml"
    path.write_bytes(b'issuer = "\xff"\n')
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        OidcConfig.load(path)


def test_serve_reads_the_config_once_so_a_pipe_will_do(tmp_path: Path) -> None:
    """``--oidc-config <(vault read …)`` is a pipe: it holds the config for one read."""
    pipe = tmp_path / "oidc.toml"
    config = b'issuer = "https://issuer.example"\naudience = "sk"\njwks_url = "https://x/jwks"\n'
    with pipe_written_once(pipe, config):
        server = StatekeeperServer(tmp_path / "server", "--oidc-config", str(pipe))
        try:
            # A second read would wait for a writer forever and the server never answer.
            server.start()
            assert "access control: OIDC (https://issuer.example)" in server.log()
            assert httpx.get(server.state_url("app"), timeout=30).status_code == 401
        finally:
            server.stop()
