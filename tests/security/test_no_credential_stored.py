"""No credential material is stored or logged, right, wrong or mistyped (#11.2).

Random secrets are sent in every place a credential can go (the Basic username
with an empty password or with a password, the Basic password of a known and of
an unknown name, a Bearer token, a bare Authorization value, a JWT-shaped
value), to a real server on SQLite and one on S3 (moto). Afterwards no secret,
nor the Authorization header carrying it, occurs in the database files, in any
version of any S3 object, or in the server's log.
"""

from __future__ import annotations

import base64
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.security.support import make_tokens

from statekeeper.security.tokens import issue
from statekeeper.security.tokenstores import FileTokenStore
from statekeeper.testing.processes import MotoServer, StatekeeperServer

NAME = "team/app.tfstate"
#: Marked, so that a secret Hypothesis builds from words of the code (it does) is not
#: found where that word legitimately is.
SECRETS = st.text(string.ascii_letters + string.digits + "-_.~+/=", min_size=8, max_size=48).map(
    lambda s: f"Zq7{s}7qZ"
)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


POSITIONS: dict[str, Callable[[str], str]] = {
    "basic username, empty password": lambda s: "Basic " + _b64(f"{s}:"),
    "basic username, some password": lambda s: "Basic " + _b64(f"{s}:password"),
    "basic password of a known name": lambda s: "Basic " + _b64(f"ci:{s}"),
    "basic password of an unknown name": lambda s: "Basic " + _b64(f"nobody:{s}"),
    "basic without a colon": lambda s: "Basic " + _b64(s),
    "basic, not base64": lambda s: f"Basic {s}!",
    "bearer": lambda s: f"Bearer {s}",
    "bearer, JWT-shaped": lambda s: f"Bearer eyJ{s}.eyJ{s}.{s}",
    "bare value": lambda s: s,
    "unknown scheme": lambda s: f"Token {s}",
}


def _hammer(server: StatekeeperServer) -> list[str]:
    """Send random secrets in every position; the texts that must appear nowhere."""
    sent: list[str] = []

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(secret=SECRETS, position=st.sampled_from(sorted(POSITIONS)))
    def send(secret: str, position: str) -> None:
        header = POSITIONS[position](secret)
        method = ["GET", "POST", "LOCK"][len(sent) % 3]
        r = httpx.request(
            method, server.state_url(NAME), headers={"Authorization": header}, content=b"{}"
        )
        assert r.status_code in (401, 429), (position, r.status_code, r.text)
        assert secret not in r.text  # not even echoed to the sender
        sent.extend([secret, header.partition(" ")[2] or header])

    send()
    return sent


def _assert_absent(texts: list[str], blobs: dict[str, bytes]) -> None:
    for where, blob in blobs.items():
        found = [t for t in texts if t.encode() in blob]
        assert not found, f"{where} holds credential material: {found[:3]}"


def test_no_secret_reaches_the_sqlite_files_or_the_log(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    make_tokens(workdir, {"ci": ["team/*:write"]})
    server = serve("--log-level", "info", workdir=workdir, env={"STATEKEEPER_RATE_LIMIT": "0"})
    sent = _hammer(server)
    server.stop()
    blobs = {p.name: p.read_bytes() for p in (workdir / ".statekeeper").glob("statekeeper.db*")}
    blobs["server log"] = server.log().encode()
    assert b"authenticate" in b"".join(blobs.values())  # the denials are recorded...
    _assert_absent(sent, blobs)  # ...without what was sent


@pytest.mark.aws
def test_no_secret_reaches_s3_or_the_log(
    tmp_path: Path, moto: MotoServer, serve: Callable[..., StatekeeperServer]
) -> None:
    s3: Any = moto.client("s3")
    s3.create_bucket(Bucket="audited")
    s3.put_bucket_versioning(Bucket="audited", VersioningConfiguration={"Status": "Enabled"})
    tokens_file = tmp_path / "tokens.toml"
    FileTokenStore(tokens_file).add(issue("ci", ["team/*:write"]).record)
    server = serve(
        "--store",
        "s3://audited",
        "--tokens-file",
        str(tokens_file),
        "--log-level",
        "info",
        env={**moto.env(), "STATEKEEPER_RATE_LIMIT": "0"},
    )
    sent = _hammer(server)
    server.stop()
    blobs = {"server log": server.log().encode()}
    for v in s3.list_object_versions(Bucket="audited").get("Versions", []):
        body = s3.get_object(Bucket="audited", Key=v["Key"], VersionId=v["VersionId"])["Body"]
        blobs[f"s3://audited/{v['Key']}@{v['VersionId']}"] = body.read()
    assert any("audit" in key for key in blobs)
    _assert_absent(sent, blobs)
