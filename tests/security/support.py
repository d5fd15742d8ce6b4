"""Helpers for access control tests: tokens in a server's database, credentials, a UI
session, bodies, master keys."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from statekeeper.app import Services
from statekeeper.security.caller import Caller
from statekeeper.settings import load_settings
from statekeeper.times import parse_duration

OPERATOR = Caller(actor="operator:test", remote_addr="local")

#: Role -> grants. "stranger" holds admin, but only on states nobody else uses.
ROLES: dict[str, list[str]] = {
    "outputs": ["team/*:outputs"],
    "reader": ["team/*:read"],
    "writer": ["team/*:write"],
    "admin": ["team/*:admin"],
    "stranger": ["elsewhere/**:admin"],
    "root": ["**:admin"],
}


def make_tokens(
    server_dir: Path, roles: dict[str, list[str]], expires: dict[str, str] | None = None
) -> dict[str, str]:
    """Create tokens in the embedded database a server in ``server_dir`` will use."""
    settings = load_settings({"data_dir": server_dir / ".statekeeper"}, env={})
    services = Services.build(settings)
    try:
        assert services.tokens.store is not None
        secrets = {}
        for name, scopes in roles.items():
            lifetime = parse_duration((expires or {})[name]) if name in (expires or {}) else None
            issued = services.tokens.create(OPERATOR, name, scopes, lifetime)
            secrets[name] = issued.secret
        return secrets
    finally:
        services.close()


def basic(name: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{name}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@contextmanager
def signed_in(url: str, name: str, secret: str) -> Iterator[httpx.Client]:
    """A client signed in to the web UI at ``url`` with a token (its session cookie kept)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        form = client.get("/ui/signin").text
        csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = client.post("/ui/signin", data={"csrf": csrf, "token": name, "secret": secret})
        assert signed.status_code == 303, signed.text
        yield client


def state_json(
    serial: int, lineage: str = "5f0ec5b3-aaaa-bbbb-cccc-000000000001", **extra: object
) -> bytes:
    doc = {
        "version": 4,
        "terraform_version": "1.15.0",
        "serial": serial,
        "lineage": lineage,
        "outputs": {"endpoint": {"value": "https://example.test", "type": "string"}},
        "resources": [
            {
                "mode": "managed",
                "type": "terraform_data",
                "name": "db",
                "provider": 'provider["terraform.io/builtin/terraform"]',
                "instances": [{"schema_version": 0, "attributes": {"input": "db-password-42"}}],
            }
        ],
        "check_results": None,
        **extra,
    }
    return json.dumps(doc, indent=2).encode()


def lock_body(lock_id: str, who: str = "ci@runner", operation: str = "OperationTypeApply") -> bytes:
    return json.dumps(
        {
            "ID": lock_id,
            "Operation": operation,
            "Info": "",
            "Who": who,
            "Version": "1.15.0",
            "Created": "2026-01-01T00:00:00Z",
            "Path": "",
        }
    ).encode()


def master_key() -> str:
    """A fresh local master key: 32 random bytes in base64."""
    return base64.b64encode(os.urandom(32)).decode()


def key_files(directory: Path, *names: str) -> list[Path]:
    """A file in ``directory`` for each name, each holding a fresh master key."""
    files = [directory / name for name in names]
    for file in files:
        file.write_text(master_key())
    return files
