"""The tokens file: read whole and refused at its first read (the start of ``serve`` or
of a command), naming the file, the token and the key; a bad edit under a running
server refuses every token, with one log line, not a 500 per request."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from statekeeper.errors import ConfigError
from statekeeper.security.tokens import issue
from statekeeper.security.tokenstores import FileTokenStore

HASH = "a" * 64


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("x = [\n", "is not valid TOML"),
        ('[tokn."ci"]\nsha256 = "' + HASH + '"\n', "unknown key(s) tokn"),
        (
            f'[tokens."ci"]\nsha256 = "{HASH}"\nscope = ["**:read"]\n',
            "[tokens.ci]: unknown key(s) scope",
        ),
        ('[tokens."ci"]\nscopes = ["**:read"]\n', "[tokens.ci]: sha256 is required"),
        (f'[tokens."ci"]\nsha256 = "{HASH}"\n', "[tokens.ci]: scopes is required"),
        ('[tokens."ci"]\nsha256 = "zz"\nscopes = ["**:read"]\n', "[tokens.ci]: sha256 must be 64"),
        (
            f'[tokens."ci"]\nsha256 = "{HASH}"\nscopes = ["**:reed"]\n',
            "[tokens.ci]: scopes: '**:reed'",
        ),
        (f'[tokens."ci"]\nsha256 = "{HASH}"\nscopes = "**:read"\n', "scopes must be a list"),
        (
            f'[tokens."ci"]\nsha256 = "{HASH}"\nscopes = ["**:read"]\nexpires = "soon"\n',
            "[tokens.ci]: expires: 'soon' is not an RFC 3339 time",
        ),
        ('tokens = "ci"\n', "'tokens' must be a table"),
    ],
)
def test_a_bad_tokens_file_is_refused_at_its_first_read(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        FileTokenStore(path).check()
    assert str(path) in err.value.message
    assert said in err.value.message


def test_a_missing_tokens_file_is_refused_but_token_create_makes_it(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    with pytest.raises(ConfigError, match=f"the tokens file {path} does not exist"):
        FileTokenStore(path).check()
    FileTokenStore(path).add(issue("ci", ["**:read"]).record)
    assert FileTokenStore(path).check() == 1


def test_a_bad_edit_under_a_running_server_refuses_every_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.toml"
    issued = issue("ci", ["**:read"])
    FileTokenStore(path).add(issued.record)
    served = FileTokenStore(path)
    assert served.check() == 1
    path.write_text(path.read_text().replace("scopes", "scope"))
    with caplog.at_level(logging.ERROR, "statekeeper.tokens"):
        for _ in range(3):
            assert served.get("ci") is None
            assert served.find(issued.record.sha256) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: [tokens.ci]: unknown key(s) scope; known: sha256, scopes, created, "
        "expires; every API token is refused until the file is corrected"
    ]
    # A change would write over what the operator is fixing.
    with pytest.raises(ConfigError, match="unknown key"):
        served.add(issue("other", ["**:read"]).record)
    path.write_text(path.read_text().replace("scope", "scopes"))
    assert served.get("ci") == issued.record
