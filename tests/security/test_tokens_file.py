"""The tokens file: read whole and refused at its first read (the start of ``serve`` or
of a command), naming the file, the token and the key; a bad edit under a running
server refuses every token, with one log line, not a 500 per request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.security.conftest import pipe_written_once

from statekeeper.errors import ConfigError
from statekeeper.security.tokens import issue
from statekeeper.security.tokenstores import FileTokenStore
from statekeeper.testing.processes import StatekeeperServer

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
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    path = tmp_path / "tokens.toml"
    issued = issue("ci", ["**:read"])
    FileTokenStore(path).add(issued.record)
    server = serve("--tokens-file", str(path))
    basic, bearer = ("ci", issued.secret), {"Authorization": f"Bearer {issued.secret}"}
    assert httpx.get(server.state_url("app"), auth=basic, timeout=30).status_code == 404
    path.write_text(path.read_text().replace("scopes", "scope"))
    for _ in range(2):
        for answer in (
            httpx.get(server.state_url("app"), auth=basic, timeout=30),
            httpx.get(server.state_url("app"), headers=bearer, timeout=30),
        ):
            assert answer.status_code == 401
            assert answer.json()["message"] == (
                f"this server's tokens file {path} cannot be read or parsed, so no API token "
                "can be checked; the server's operator must correct the file (the server's "
                "log says what is wrong with it)"
            )
    # A change would write over what the operator is fixing.
    with pytest.raises(ConfigError, match="unknown key"):
        FileTokenStore(path).add(issue("other", ["**:read"]).record)
    path.write_text(path.read_text().replace("scope", "scopes"))
    assert httpx.get(server.state_url("app"), auth=basic, timeout=30).status_code == 404
    server.stop()
    said = [line for line in server.log().splitlines() if "tokens file" in line]
    assert len(said) == 1, said
    assert (
        "every API token is refused until the tokens file is corrected: "
        f"{path}: [tokens.ci]: unknown key(s) scope; known: sha256, scopes, created, expires"
    ) in said[0]


def test_serve_reads_the_tokens_file_once_so_a_pipe_will_do(tmp_path: Path) -> None:
    """``--tokens-file <(vault read …)`` is a pipe: it holds the tokens for one read."""
    made = tmp_path / "made.toml"
    issued = issue("ci", ["**:read"])
    FileTokenStore(made).add(issued.record)
    pipe = tmp_path / "tokens.toml"
    with pipe_written_once(pipe, made.read_bytes()):
        server = StatekeeperServer(tmp_path / "server", "--tokens-file", str(pipe))
        try:
            # A second read at the start would wait for a writer forever; one at a request
            # (the write changed the pipe's mtime) would hold that request and every other.
            server.start()
            for _ in range(2):
                answer = httpx.get(server.state_url("app"), auth=("ci", issued.secret), timeout=10)
                assert answer.status_code == 404, answer.text
            assert httpx.get(server.state_url("app"), timeout=10).status_code == 401
        finally:
            server.stop()
