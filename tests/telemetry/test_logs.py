"""Server logs from a real ``statekeeper serve``: JSON lines, request IDs, and no secrets.

Every credential the server accepts (token secrets as Basic passwords and as
Bearer tokens, OIDC JWTs) and state content are sent, right and wrong, and
then looked for in the whole log.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import pty
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from tests.security.support import basic, bearer, make_tokens, state_json

from statekeeper.events import Action, Event, EventStream
from statekeeper.security.caller import Caller
from statekeeper.telemetry.logs import (
    REQUEST,
    JsonFormatter,
    RequestLog,
    apart_from_request,
    log_event,
)
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import SRC, StatekeeperServer

ISSUER = "https://token.actions.example.test"
MARK = "content-marker-7f3a9c"  # in state bodies only


def _oidc(workdir: Path) -> tuple[Path, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    (workdir / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    config = workdir / "oidc.toml"
    config.write_text(
        f'issuer = "{ISSUER}"\naudience = "statekeeper"\njwks_file = "jwks.json"\n\n'
        '[[rules]]\nclaim = { repository = "org/infra" }\nscope = "team/*:write"\n'
    )
    return config, key


def _jwt(key: rsa.RSAPrivateKey, repository: str = "org/infra") -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "statekeeper",
        "sub": f"repo:{repository}:ref:refs/heads/main",
        "repository": repository,
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def _lines(log: str) -> list[dict[str, Any]]:
    """The log's lines, each of which must be one JSON object (stdout's backend block aside)."""
    records = []
    for line in log.splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


def test_json_logs_carry_request_ids_and_never_a_credential_or_state_content(
    tmp_path: Path, serve: Callable[..., StatekeeperServer]
) -> None:
    workdir = tmp_path / "server"
    workdir.mkdir()
    secrets = make_tokens(workdir, {"ci": ["team/*:write"], "root": ["**:admin"]})
    oidc_config, key = _oidc(workdir)
    server = serve(
        "--oidc-config",
        str(oidc_config),
        "--log-level",
        "debug",
        workdir=workdir,
        env={"STATEKEEPER_LOG_FORMAT": "json"},
    )
    url = server.state_url("team/app.tfstate")
    good_jwt, stranger_jwt = _jwt(key), _jwt(key, "evil/repo")
    content = state_json(1, outputs={"secret": {"value": MARK, "type": "string"}})
    sent: list[str] = [secrets["ci"], secrets["root"], good_jwt, stranger_jwt, "wrong-secret-41d2"]

    with httpx.Client(timeout=30) as http:
        wrote = http.post(
            url, content=content, headers={**basic("ci", secrets["ci"]), "X-Request-ID": "req-42"}
        )
        assert wrote.status_code == 200, wrote.text
        assert wrote.headers["x-request-id"] == "req-42"
        assert http.get(url, headers=bearer(secrets["ci"])).content == content
        assert http.get(url, headers=basic("ci", "wrong-secret-41d2")).status_code == 401
        assert http.get(url, headers=basic("ci-runner", good_jwt)).status_code == 200
        assert http.get(url, headers=bearer(stranger_jwt)).status_code == 403
        refused = http.post(url, content=b"{" + MARK.encode(), headers=bearer(good_jwt))
        assert refused.status_code == 400
        generated = http.get(server.url + "/healthz").headers["x-request-id"]
        assert len(generated) == 32
        # A request ID that could forge log lines is replaced, not echoed.
        forged = http.get(server.url + "/healthz", headers={"X-Request-ID": "a\tb c"})
        assert forged.headers["x-request-id"] != "a\tb c"
    server.stop()

    log = server.log()
    for secret in sent:
        assert secret not in log
    for secret in (secrets["ci"], good_jwt):
        assert base64.b64encode(f"ci:{secret}".encode()).decode() not in log
        assert base64.b64encode(f"ci-runner:{secret}".encode()).decode() not in log
    assert MARK not in log
    assert "Basic " not in log and "Bearer " not in log

    records = _lines(log)
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    access = [r for r in records if r["logger"] == "statekeeper.access"]
    first = next(r for r in access if r["request_id"] == "req-42")
    assert first["method"] == "POST"
    assert first["route"] == "/state/{name}"
    assert first["state"] == "team/app.tfstate"
    assert first["caller"] == "ci"
    assert first["status"] == 200
    assert first["duration_ms"] >= 0
    # The write's event rides on its request's access line: one line per request.
    write = first["event"]
    assert write["action"] == "write" and write["outcome"] == "ok" and write["serial"] >= 0
    assert write["state"] == "team/app.tfstate" and write["actor"] == "ci"
    assert write["time"].endswith("Z") and write["id"]
    assert not [r for r in records if r["logger"] == "statekeeper.events"]
    assert len([r for r in access if r["request_id"] == "req-42"]) == 1
    statuses = sorted(r["status"] for r in access if r["route"] == "/state/{name}")
    assert statuses == [200, 200, 200, 400, 401, 403]
    unauthenticated = next(r for r in access if r["status"] == 401)
    assert unauthenticated["caller"] is None
    assert any(r["request_id"] == generated and r["level"] == "debug" for r in access)
    # The start-up lines are JSON too (the backend block goes to stdout for people).
    serving = [
        r for r in records if r["logger"] == "statekeeper.serve" and "serving on" in r["message"]
    ]
    assert len(serving) == 1
    # uvloop is a dependency: the server runs on it.
    assert serving[0]["message"].endswith(" loop=uvloop")


def test_text_logs_keep_the_familiar_access_line(serve: Callable[..., StatekeeperServer]) -> None:
    server = serve("--log-level", "info", env={"STATEKEEPER_LOG_FORMAT": "text"})
    httpx.get(server.state_url("team/x.tfstate"), headers={"X-Request-ID": "t-1"}, timeout=30)
    server.stop()
    line = next(ln for ln in server.log().splitlines() if "request_id=t-1" in ln)
    assert line.startswith("INFO:")
    assert '"GET /state/team/x.tfstate HTTP/1.1" 404' in line
    assert "caller=anonymous" in line
    assert not any(ln.startswith("{") for ln in server.log().splitlines())
    # The read's event rides on the access line, as words, not as JSON text.
    assert line.endswith(" caller=anonymous request_id=t-1 event=read:ok")
    assert "statekeeper.events" not in server.log()


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        ("/x%0Aforged%20caller=root", "/x\\nforged caller=root"),
        ("/x%E2%80%A8forged%20caller=root", "/x\\u2028forged caller=root"),
        ("/x%C2%85forged%20caller=root", "/x\\x85forged caller=root"),
        ("/x%22%20200%200.1ms%20caller=root", '/x\\" 200 0.1ms caller=root'),
        ("/x%5C%22%20caller=root", '/x\\\\\\" caller=root'),
    ],
)
def test_a_path_cannot_forge_a_text_line_or_its_fields(
    serve: Callable[..., StatekeeperServer], path: str, quoted: str
) -> None:
    """The decoded path is quoted in the text line: a line break of any kind (Unicode's,
    which ``str.splitlines`` honours, too) or a ``"`` would let a caller write a line, or
    a ``caller=`` of its own before the real one."""
    server = serve("--log-level", "info", env={"STATEKEEPER_LOG_FORMAT": "text"})
    httpx.get(server.url + path, headers={"X-Request-ID": "t-2"}, timeout=30)
    server.stop()
    (line,) = [ln for ln in server.log().splitlines() if "forged" in ln or "root" in ln]
    assert f'"GET {quoted} HTTP/1.1" 4' in line
    assert line.count('"') - line.count('\\"') == 2
    assert line.endswith(" caller=anonymous request_id=t-2")


def _capture() -> tuple[io.StringIO, Callable[[], None]]:
    """The real JSON format on the events logger, into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("statekeeper.events")
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]

    return buffer, restore


def test_a_side_effect_of_an_operation_does_not_take_the_requests_line() -> None:
    # A lock whose way was cleared by expiring another's lease: the request's line
    # carries the lock, the expiry has its own line.
    stream = EventStream()
    stream.subscribe(log_event)
    buffer, restore = _capture()
    request = RequestLog("req-8")
    token = REQUEST.set(request)
    try:
        with stream.event(Action.LOCK, Caller("ci"), StateName("team/a.tfstate")) as draft:
            draft.lock_id = "L2"
            stream.emit(Event(action=Action.EXPIRE, actor="statekeeper", state="team/a.tfstate"))
    finally:
        REQUEST.reset(token)
        restore()
    carried = request.close()
    assert carried is not None and carried.action is Action.LOCK and carried.lock_id == "L2"
    (line,) = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert (line["action"], line["request_id"]) == ("expire", "req-8")


def test_an_event_rides_on_its_request_and_outside_one_has_a_line_of_its_own() -> None:
    buffer, restore = _capture()
    try:
        sweep = Event(action=Action.EXPIRE, actor="statekeeper", state="team/a.tfstate")
        log_event(sweep)  # no request: the lease sweeper's, a CLI command's
        request = RequestLog("req-7")
        token = REQUEST.set(request)
        try:
            with apart_from_request():  # another caller's refusals, closed meanwhile
                log_event(Event(action=Action.AUTHENTICATE, actor="x", outcome="forbidden"))
            lock = Event(action=Action.LOCK, actor="ci", state="team/a.tfstate", lock_id="L1")
            log_event(lock)
            second = Event(action=Action.COMPACT, actor="ci", state="team/a.tfstate")
            log_event(second)
            assert request.close() is lock
            late = Event(action=Action.WRITE, actor="ci", state="team/a.tfstate", serial=4)
            log_event(late)  # the operation outlived its request's line
        finally:
            REQUEST.reset(token)
    finally:
        restore()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [(r["action"], r.get("request_id")) for r in lines] == [
        ("expire", None),
        ("authenticate", None),
        ("compact", "req-7"),
        ("write", "req-7"),
    ]
    assert lines[0]["message"] == "expire ok team/a.tfstate by statekeeper"
    assert lines[3]["serial"] == 4 and lines[3]["event_time"].endswith("Z")


@pytest.mark.parametrize(
    "created",
    [0.0, 1764892063.0, 1764892063.0005, 1764892063.4687, 1764892063.9999, 1764892064.001],
)
def test_json_line_times_are_rfc3339_milliseconds_in_utc(created: float) -> None:
    # The formatter reuses the text of the second; each line must still read its own time.
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    line = JsonFormatter().format(_record(created))
    assert line.startswith('{"time":')
    assert json.loads(line)["time"] == expected.replace("+00:00", "Z")


def test_a_json_line_carries_what_the_fast_encoder_refuses() -> None:
    # orjson refuses integers past 64 bits and lone surrogates; the line still comes out.
    record = _record(1764892063.0)
    record.fields = {"serial": 2**70, "path": "/state/a\udc80b", "when": datetime(2026, 1, 2)}
    line = json.loads(JsonFormatter().format(record))
    assert line["serial"] == 2**70
    assert line["path"] == "/state/a\udc80b"
    assert line["when"] == "2026-01-02 00:00:00"  # what is not JSON, as its str
    assert line["message"] == "x" and line["logger"] == "statekeeper.test"
    # Without them, the same fields as the fast encoder writes them.
    record.fields = {"serial": 7, "path": "/state/é", "ratio": 0.1, "event": {"claims": {}}}
    line = json.loads(JsonFormatter().format(record))
    assert (line["serial"], line["path"], line["ratio"], line["event"]) == (
        7,
        "/state/é",
        0.1,
        {"claims": {}},
    )


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord("statekeeper.test", logging.INFO, __file__, 1, "x", None, None)
    record.created = created
    return record


@pytest.mark.parametrize(("terminal", "expected"), [(True, "text"), (False, "json")])
def test_auto_is_text_on_a_terminal_and_json_otherwise(terminal: bool, expected: str) -> None:
    code = "from statekeeper.telemetry.logs import resolve_format; print(resolve_format('auto'))"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    if terminal:
        main, child = pty.openpty()
        try:
            out = subprocess.run(
                [sys.executable, "-c", code],
                stderr=child,
                stdout=subprocess.PIPE,
                env=env,
                check=True,
            )
        finally:
            os.close(main)
            os.close(child)
    else:
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            env=env,
            check=True,
        )
    assert out.stdout.decode().strip() == expected
