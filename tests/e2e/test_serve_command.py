"""``statekeeper serve`` as a person runs it: refusals, the printed backend block."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.security.support import make_tokens
from watch import get_state

from statekeeper.testing.processes import SRC, StatekeeperServer, free_port
from statekeeper.testing.terraform import Terraform

#: The backend block ``serve`` prints.
_BLOCK = re.compile(r'terraform \{\n  backend "http" \{\n.*?\n  \}\n\}\n', re.DOTALL)


def run_serve(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``statekeeper serve ARGS`` expected to exit on its own (it refuses to start)."""
    port = () if "--port" in args else ("--port", str(free_port()))
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", "serve", *port, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_refused(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    assert "Paste this" not in result.stdout  # it never got to serving


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_serve_refuses_to_bind_beyond_loopback(tmp_path: Path, host: str) -> None:
    result = run_serve(tmp_path, "--host", host)
    assert_refused(result, f"refusing to serve on {host}", "access control", "--host 127.0.0.1")
    assert not (tmp_path / ".statekeeper").exists()  # nothing created


def test_serve_refuses_a_non_loopback_host_from_the_environment(tmp_path: Path) -> None:
    result = run_serve(tmp_path, env={"STATEKEEPER_HOST": "0.0.0.0"})
    assert_refused(result, "refusing to serve on 0.0.0.0")


def test_serve_with_an_unknown_store_scheme_is_a_clear_error(tmp_path: Path) -> None:
    result = run_serve(tmp_path, "--store", "ftp://somewhere/states")
    assert_refused(result, "ftp://somewhere/states", "'ftp'", "known schemes", "sqlite")


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (("--store", "not-a-url"), ("is not a store or lock URL", "sqlite:///")),
        (("--store", "sqlite://host/x.db"), ("a SQLite URL has no host",)),
        (("--store", "sqlite:///x.db?mode=fast"), ("unknown option(s) mode",)),
        (("--locks", "etcd://cluster"), ("'etcd'", "known schemes")),
    ],
)
def test_serve_with_bad_store_or_lock_urls_is_a_clear_error(
    tmp_path: Path, args: tuple[str, ...], phrases: tuple[str, ...]
) -> None:
    assert_refused(run_serve(tmp_path, *args), *phrases)


def test_serve_with_a_bad_setting_is_a_clear_error(tmp_path: Path) -> None:
    assert_refused(
        run_serve(tmp_path, env={"STATEKEEPER_MAX_BODY": "huge"}), "STATEKEEPER_MAX_BODY"
    )
    config = tmp_path / "statekeeper.toml"
    config.write_text('colour = "blue"\n')
    assert_refused(run_serve(tmp_path, "--config", str(config)), "unknown setting 'colour'")


def test_serve_on_a_busy_port_is_a_clear_error(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    busy = serve()
    result = run_serve(tmp_path, "--port", str(busy.port))
    assert_refused(result, f"cannot listen on 127.0.0.1 port {busy.port}", "--port")
    assert "Address already in use" in result.stderr


@pytest.mark.parametrize("port", ["0", "70000"])
def test_serve_on_a_port_out_of_range_is_a_clear_error(tmp_path: Path, port: str) -> None:
    assert_refused(run_serve(tmp_path, "--port", port), "from 1 to 65535")


def test_serve_on_ipv6_loopback_prints_a_bracketed_address(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "statekeeper", "serve", "--host", "::1", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(5)]
    finally:
        proc.terminate()
        proc.wait(30)
    assert f'address        = "http://[::1]:{port}/state/' in "".join(lines), lines


@pytest.mark.terraform
def test_serve_prints_a_backend_block_that_terraform_accepts(
    serve: Callable[..., StatekeeperServer], terraform: Callable[..., Terraform]
) -> None:
    server = serve("--example-state", "printed/terraform.tfstate")
    log = server.log()
    assert "Paste this into your Terraform configuration" in log
    match = _BLOCK.search(log)
    assert match, log
    block = match.group(0)
    address = f"{server.url}/state/printed/terraform.tfstate"
    for key in ("address", "lock_address", "unlock_address"):
        assert re.search(rf'{key}\s+= "{re.escape(address)}"', block), block
    assert (server.workdir / ".statekeeper").is_dir()  # the embedded default

    tf = terraform().write(block + 'resource "terraform_data" "x" { input = 1 }\n')
    tf.run("init").check()
    tf.run("apply").check()
    assert get_state(server, "printed/terraform.tfstate") is not None


@pytest.mark.terraform
def test_with_access_control_the_printed_block_says_where_the_credentials_go(
    tmp_path: Path, serve: Callable[..., StatekeeperServer], terraform: Callable[..., Terraform]
) -> None:
    workdir = tmp_path / "server"
    workdir.mkdir()
    secrets = make_tokens(workdir, {"deployer": ["team/*:write"]})
    server = serve("--example-state", "team/app.tfstate", workdir=workdir)
    match = _BLOCK.search(server.log())
    assert match, server.log()
    block = match.group(0)
    assert "set TF_HTTP_USERNAME and TF_HTTP_PASSWORD to a token's" in block, block
    assert secrets["deployer"] not in server.log()

    # Pasted as printed, with the credentials where it says: Terraform is let in.
    tf = terraform().write(block + 'resource "terraform_data" "x" { input = 1 }\n')
    creds = {"TF_HTTP_USERNAME": "deployer", "TF_HTTP_PASSWORD": secrets["deployer"]}
    tf.run("init", env=creds).check()
    tf.run("apply", env=creds).check()
    stored = httpx.get(
        server.state_url("team/app.tfstate"), auth=("deployer", secrets["deployer"]), timeout=30
    )
    assert stored.status_code == 200 and b"terraform_data" in stored.content
    # Without them, refused: the block alone holds no credential.
    refused = tf.run("plan")
    assert refused.returncode != 0
    assert "requires auth" in refused.output, refused.output
