"""State globs: what they cover, and a malformed one refused as a glob wherever it is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from statekeeper.errors import BadRequest
from statekeeper.hooks.model import Subscription
from statekeeper.security.grants import parse_grant
from statekeeper.state.globs import parse_glob
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import SRC


@pytest.mark.parametrize(
    ("pattern", "name", "covered"),
    [
        ("team/*", "team/app.tfstate", True),
        ("team/*", "team/app/prod.tfstate", False),  # '*' stays within a segment
        ("team/**", "team/app/prod.tfstate", True),
        ("team/**", "team/app.tfstate", True),
        ("team/**", "teams/app.tfstate", False),
        ("team/**/prod.tfstate", "team/prod.tfstate", True),  # '**' may be zero segments
        ("team/**/prod.tfstate", "team/a/b/prod.tfstate", True),
        ("team/**/prod.tfstate", "team/a/b/dev.tfstate", False),
        ("**", "anything/at/all.tfstate", True),
        ("*/prod.tfstate", "team/prod.tfstate", True),
        ("*/prod.tfstate", "team/x/prod.tfstate", False),
        ("env:/*/app.tfstate", "env:/staging/app.tfstate", True),
        ("team/app?.tfstate", "team/app1.tfstate", True),
        ("team/app?.tfstate", "team/app/.tfstate", False),
        ("team/a.b", "team/aXb", False),  # '.' is literal
    ],
)
def test_a_glob_and_a_grant_on_it_cover_the_same_states(
    pattern: str, name: str, covered: bool
) -> None:
    assert parse_glob(pattern).covers(StateName(name)) is covered
    assert parse_grant(f"{pattern}:read").covers(StateName(name)) is covered


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "the state glob is empty"),
        ("   ", "the state glob is empty"),
        ("/team/*", "has an empty segment"),
        ("team//app", "has an empty segment"),
        ("a**b", "uses '**' inside a segment"),
        ("team/**x/app", "uses '**' inside a segment"),
        ("team/[ab]", "holds '[', which no state name holds"),
        ("team/my app", "holds ' ', which no state name holds"),
    ],
)
def test_a_malformed_glob_is_refused_in_words_about_a_glob(text: str, why: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_glob(text)
    message = refused.value.message
    assert why in message and "write a state glob as" in message
    assert "grant" not in message and "PERMISSION" not in message
    # Inside a grant, the same fault is told with how to write a grant.
    if text.strip():
        with pytest.raises(BadRequest, match="PATTERN:PERMISSION") as in_grant:
            parse_grant(f"{text}:read")
        assert why in in_grant.value.message


def test_a_subscription_refuses_a_malformed_glob() -> None:
    with pytest.raises(BadRequest, match="the state glob 'team//app' has an empty segment"):
        Subscription("h", "https://example.org/hook", "s", states=("team//app",))


def _statekeeper(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "statekeeper", *args],
        cwd=cwd,
        env={**base, "PYTHONPATH": str(SRC), "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (
            ("hooks", "add", "h", "--url", "http://192.0.2.1/hook", "--state", ""),
            {},
            "the state glob is empty",
        ),
        (("audit", "--state", "team//app"), {}, "the state glob 'team//app' has an empty segment"),
        (
            ("serve", "--port", "1"),
            {"STATEKEEPER_METRICS_STATES": "team/**,a**b"},
            "metrics_states: the state glob 'a**b' uses '**' inside a segment",
        ),
    ],
)
def test_commands_refuse_a_malformed_glob_as_a_glob(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], said: str
) -> None:
    code, stderr = _statekeeper(tmp_path, *args, env=env)
    assert code == 2, stderr
    assert said in stderr and "write a state glob as" in stderr
    assert "grant" not in stderr and "Traceback" not in stderr


def test_a_retention_rule_that_can_match_no_state_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "history.toml").write_text(
        '[history]\n[[history.retention]]\nstates = "prod/["\nkeep_last = 1\n'
    )
    code, stderr = _statekeeper(tmp_path, "--config", "history.toml", "prune")
    assert code == 2, stderr
    assert "history.toml" in stderr and "history.retention[0]" in stderr
    assert "the state glob 'prod/[' holds '['" in stderr and "Traceback" not in stderr
