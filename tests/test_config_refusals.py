"""A bad configuration stops ``statekeeper serve`` before it serves anything: exit code 2,
a message naming what is wrong, no traceback, and no secret repeated.

Each case runs a real process on a port this test holds: a configuration that got past
the checks fails to bind instead (with another message), rather than serving forever.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from statekeeper.security.tokens import issue
from statekeeper.security.tokenstores import FileTokenStore
from statekeeper.testing.processes import SRC


def serve(
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
    args_after: tuple[str, ...] = (),
) -> tuple[int, str]:
    """``statekeeper ARGS serve --port HELD ARGS_AFTER``: its exit code and stderr."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])
        proc = subprocess.run(
            [sys.executable, "-m", "statekeeper", *args, "serve", "--port", port, *args_after],
            cwd=cwd,
            env={**base, "PYTHONPATH": str(SRC), "COLUMNS": "200", **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "serving on" not in proc.stderr, proc.stderr
    assert "backend" not in proc.stdout, proc.stdout
    return proc.returncode, proc.stderr


def test_an_empty_master_key_file_is_refused_not_encryption_off(tmp_path: Path) -> None:
    (tmp_path / "empty.key").write_text("\n")
    code, stderr = serve(tmp_path, env={"STATEKEEPER_MASTER_KEY_FILE": "empty.key"})
    assert code == 2, stderr
    assert "STATEKEEPER_MASTER_KEY_FILE" in stderr and "empty.key is empty" in stderr


SECRET = "TOPSECRET-hook-sig-key"
HOOK = {"name": "chat", "url": "https://chat.example/hook", "secret": SECRET, "evnts": ["x"]}


def test_a_config_error_never_repeats_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[[hooks]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in HOOK.items()))
    for args, env in [
        (("--config", str(config)), {}),
        ((), {"STATEKEEPER_HOOKS": json.dumps([HOOK])}),
    ]:
        code, stderr = serve(tmp_path, *args, env=env)
        assert code == 2, stderr
        assert "hooks is not valid: hook chat: unknown key(s) evnts" in stderr
        assert SECRET not in stderr


def test_a_bad_or_missing_tokens_file_stops_the_start(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[tokens."ci"]\nsha256 = "' + "a" * 64 + '"\nscope = ["**:read"]\n')
    code, stderr = serve(tmp_path, "--tokens-file", str(tokens))
    assert code == 2, stderr
    assert f"{tokens}: [tokens.ci]: unknown key(s) scope" in stderr
    code, stderr = serve(tmp_path, env={"STATEKEEPER_TOKENS_FILE": "absent.toml"})
    assert code == 2, stderr
    assert "the tokens file absent.toml does not exist" in stderr


def test_a_misspelt_key_in_the_oidc_config_stops_the_start(tmp_path: Path) -> None:
    oidc = tmp_path / "oidc.toml"
    oidc.write_text(
        'issuer = "https://issuer.example"\naudience = "sk"\njwks_file = "j.json"\n'
        'audit_claim = ["repository"]\n'
    )
    code, stderr = serve(tmp_path, env={"STATEKEEPER_OIDC_CONFIG": str(oidc)})
    assert code == 2, stderr
    assert "unknown key(s) audit_claim" in stderr


@pytest.mark.parametrize("args", [("--log-level", "verbose"), ("--log-level", "inf0")])
def test_a_bad_log_level_stops_the_start_before_the_banner(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    code, stderr = serve(tmp_path, args_after=args)
    assert code == 2, stderr
    assert "the log level is one of debug, info, warning, error, critical" in stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("REQUEST_TIMEOUT", "nan"), ("MAX_CONNECTIONS", "0"), ("READY_TIMEOUT", "-1")],
)
def test_a_number_out_of_its_range_stops_the_start(tmp_path: Path, name: str, value: str) -> None:
    code, stderr = serve(tmp_path, env={f"STATEKEEPER_{name}": value})
    assert code == 2, stderr
    assert f"STATEKEEPER_{name}: {name.lower()} = {value!r} is not valid: it must be" in stderr


def test_a_metrics_listener_with_metrics_off_stops_the_start(tmp_path: Path) -> None:
    env = {"STATEKEEPER_METRICS": "false", "STATEKEEPER_METRICS_LISTEN": "127.0.0.1:8099"}
    code, stderr = serve(tmp_path, env=env)
    assert code == 2, stderr
    assert (
        "metrics_listen = 127.0.0.1:8099 asks for a metrics listener, but metrics = false" in stderr
    )


def test_a_host_that_does_not_resolve_is_blamed_not_the_port(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.toml"
    FileTokenStore(tokens).add(issue("ci", ["**:read"]).record)  # not on loopback: needs auth
    code, stderr = serve(tmp_path, "--tokens-file", str(tokens), args_after=("--host", "no host"))
    assert code == 2, stderr
    assert "cannot listen on no host: it is not an address nor a name that resolves" in stderr
    assert "--port" not in stderr


@pytest.mark.parametrize(
    ("config", "env", "said"),
    [
        (
            'lock_policy = "exclusive"\n',
            {},
            "c.toml: lock_policy is a table, not a single value: write it as [lock_policy]",
        ),
        (
            '[lock_policy]\nmode = "exclusiv"\n',
            {},
            "c.toml: lock_policy = {'mode': 'exclusiv'} is not valid: lock_policy: mode",
        ),
        (
            "",
            {"STATEKEEPER_LOCK_POLICY": "exclusive"},
            "STATEKEEPER_LOCK_POLICY: lock_policy = 'exclusive' is not valid: it is the "
            "[lock_policy] table as TOML text",
        ),
    ],
)
def test_lock_policy_errors_name_where_they_come_from(
    tmp_path: Path, config: str, env: dict[str, str], said: str
) -> None:
    (tmp_path / "c.toml").write_text(config)
    code, stderr = serve(tmp_path, "--config", "c.toml", env=env)
    assert code == 2, stderr
    assert said in stderr
