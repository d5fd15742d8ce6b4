"""Secure by default: binding, TLS, the per-caller rate, and the audit command."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.security.support import basic, make_tokens, state_json

from statekeeper.testing.processes import SRC, StatekeeperServer, free_port


def _cli(workdir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statekeeper", *args],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_no_auth_refuses_to_bind_beyond_loopback(tmp_path: Path) -> None:
    result = _cli(tmp_path, "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0" in result.stderr
    assert "statekeeper token create" in result.stderr


def test_with_tokens_any_address_is_allowed_and_anonymous_is_refused(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    secrets = make_tokens(tmp_path / "server", {"ci": ["team/*:write"]})
    server = serve("--host", "0.0.0.0", workdir=tmp_path / "server")
    log = server.log()
    assert "access control: API tokens" in log
    assert "no TLS" in log
    assert "no access control" not in log
    assert httpx.get(server.state_url("team/a.tfstate")).status_code == 401
    r = httpx.get(server.state_url("team/a.tfstate"), headers=basic("ci", secrets["ci"]))
    assert r.status_code == 404
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_a_token_created_while_serving_anonymously_turns_auth_on(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    server = serve(workdir=tmp_path / "server")
    assert "no access control is configured" in server.log()
    assert httpx.post(server.state_url("team/a.tfstate"), content=state_json(1)).status_code == 200
    made = _cli(tmp_path / "server", "token", "create", "ci", "--scope", "team/*:read", "--json")
    assert made.returncode == 0, made.stderr
    secret = json.loads(made.stdout)["secret"]
    assert httpx.get(server.state_url("team/a.tfstate")).status_code == 401
    r = httpx.get(server.state_url("team/a.tfstate"), headers=basic("ci", secret))
    assert r.status_code == 200


def test_rate_limit_answers_429_with_retry_after(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    secrets = make_tokens(tmp_path / "server", {"ci": ["team/*:read"], "other": ["team/*:read"]})
    server = serve(
        workdir=tmp_path / "server",
        env={"STATEKEEPER_RATE_LIMIT": "0.001", "STATEKEEPER_RATE_BURST": "2"},
    )
    url = server.state_url("team/a.tfstate")
    statuses = [httpx.get(url, headers=basic("ci", secrets["ci"])).status_code for _ in range(3)]
    assert statuses == [404, 404, 429]
    r = httpx.get(url, headers=basic("ci", secrets["ci"]))
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"] == "rate_limited"
    # Another caller has a bucket of its own.
    assert httpx.get(url, headers=basic("other", secrets["other"])).status_code == 404


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    secrets = make_tokens(tmp_path, {"ci": ["**:write"]})
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "statekeeper",
            "serve",
            "--port",
            str(port),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--log-level",
            "warning",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"https://127.0.0.1:{port}"
        with httpx.Client(verify=ssl.create_default_context(cafile=cert), timeout=5) as client:
            for _ in range(300):
                try:
                    client.get(url + "/healthz")
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                    time.sleep(0.1)
            r = client.post(
                url + "/state/team/a.tfstate",
                content=state_json(1),
                headers=basic("ci", secrets["ci"]),
            )
            assert r.status_code == 200, r.text
        # Plain HTTP gets no answer from the TLS port.
        try:
            plain = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
        except httpx.TransportError:
            plain = None
        assert plain != 200
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    assert "https://127.0.0.1" in (tmp_path / "serve.log").read_text()


def test_tls_needs_both_files(tmp_path: Path) -> None:
    result = _cli(tmp_path, "serve", "--tls-cert", str(tmp_path / "c.pem"))
    assert result.returncode == 2
    assert "both --tls-cert and --tls-key" in result.stderr


def test_tls_files_that_do_not_load_stop_the_start_before_the_banner(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert, key = _self_signed(tmp_path / "a")
    _, other_key = _self_signed(tmp_path / "b")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a PEM file\n")
    for (cert_file, key_file), said in [
        ((cert, junk), f"tls_key {junk} is not a PEM private key"),
        ((junk, key), f"tls_cert {junk} is not a PEM certificate"),
        ((cert, other_key), f"tls_key {other_key} is not the private key of tls_cert {cert}"),
        ((tmp_path / "absent.pem", key), "cannot read tls_cert"),
    ]:
        result = _cli(
            tmp_path,
            *("serve", "--port", str(free_port())),
            *("--tls-cert", str(cert_file), "--tls-key", str(key_file)),
        )
        assert result.returncode == 2, result.stderr
        assert said in result.stderr
        assert "serving on" not in result.stderr and "Traceback" not in result.stderr


def test_audit_command_filters(tmp_path: Path, serve: Callable[..., StatekeeperServer]) -> None:
    secrets = make_tokens(tmp_path / "server", {"ci": ["team/**:write"]})
    server = serve(workdir=tmp_path / "server")
    auth = basic("ci", secrets["ci"])
    assert (
        httpx.post(
            server.state_url("team/a.tfstate"), content=state_json(1), headers=auth
        ).status_code
        == 200
    )
    assert httpx.get(server.state_url("ops/b.tfstate"), headers=auth).status_code == 403
    assert httpx.get(server.state_url("team/a.tfstate")).status_code == 401

    def events(*args: str) -> list[dict[str, object]]:
        result = _cli(tmp_path / "server", "audit", "--json", *args)
        assert result.returncode == 0, result.stderr
        parsed: list[dict[str, object]] = json.loads(result.stdout)
        return parsed

    assert [(e["action"], e["outcome"]) for e in events("--state", "team/**")] == [("write", "ok")]
    assert [(e["state"], e["outcome"]) for e in events("--actor", "ci", "--action", "read")] == [
        ("ops/b.tfstate", "forbidden")
    ]
    assert [e["actor"] for e in events("--action", "authenticate")] == ["anonymous"]
    assert [e["action"] for e in events("--since", "1h", "--actor", "operator:test")] == [
        "token-create"
    ]
    assert events("--since", "2999-01-01T00:00:00Z") == []
    table = _cli(tmp_path / "server", "audit")
    assert "forbidden" in table.stdout
    bad = _cli(tmp_path / "server", "audit", "--since", "last tuesday")
    assert bad.returncode == 2
    assert "RFC 3339" in bad.stderr


def test_basic_credentials_that_are_not_utf8_are_refused_saying_so(
    serve: Callable[..., StatekeeperServer], tmp_path: Path
) -> None:
    workdir = tmp_path / "secured"
    make_tokens(workdir, {"ci": ["**:read"]})
    server = serve(workdir=workdir)
    # Valid base64 of bytes that are not UTF-8.
    refused = httpx.get(server.state_url("a"), headers={"Authorization": "Basic //46eA=="})
    assert refused.status_code == 401
    assert "the Basic credentials are not UTF-8" in refused.json()["message"]
