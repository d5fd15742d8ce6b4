"""Every answer says ``X-Content-Type-Options: nosniff``, once: JSON answers carry text
callers wrote (a lock's holder, a search's words, a name in an error message), which a
browser that sniffed the answer as HTML would run as a page of the server's. A real
``statekeeper serve``.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable

import httpx
from tests.security.support import lock_body, state_json
from tfwire import refusal, until_closed

from statekeeper.testing.processes import StatekeeperServer

NAME = "team/app.tfstate"
#: Text a caller writes that would be a script in a page sniffed as HTML.
MARKUP = "<html><script>alert(1)</script>"


def test_every_answer_says_nosniff_once(serve: Callable[..., StatekeeperServer]) -> None:
    server = serve()
    url = server.state_url(NAME)
    lock_id = str(uuid.uuid4())
    answers: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answers["LOCK"] = http.request("LOCK", url, content=lock_body(lock_id, who=MARKUP))
        answers["LOCK held: 423"] = http.request("LOCK", url, content=lock_body(str(uuid.uuid4())))
        answers["POST"] = http.post(url, params={"ID": lock_id}, content=state_json(1))
        answers["GET"] = http.get(url)
        answers["HEAD"] = http.head(url)
        answers["locks"] = http.get("/api/v1/locks")
        answers["UNLOCK"] = http.request("UNLOCK", url, content=lock_body(lock_id))
        answers["search"] = http.get("/api/v1/search", params={"q": MARKUP})
        answers["audit"] = http.get("/api/v1/audit")
        answers["a name quoted: 400"] = http.get(server.state_url(MARKUP))
        answers["no such state: 404"] = http.get(server.state_url("team/none.tfstate"))
        answers["no state: 400"] = http.post(url, content=b"{}")
        answers["no such route: 404"] = http.get("/api/v1/" + MARKUP)
        answers["metrics"] = http.get("/metrics")
        answers["healthz"] = http.get("/healthz")
        answers["readyz"] = http.get("/readyz")
        answers["UI page"] = http.get("/ui/locks")
        answers["UI file"] = http.get("/ui/static/swagger-ui.css")
        answers["API docs"] = http.get("/api/docs")

    expected = {
        "LOCK": 200,
        "LOCK held: 423": 423,
        "a name quoted: 400": 400,
        "no such state: 404": 404,
        "no state: 400": 400,
        "no such route: 404": 404,
    }
    for what, answer in answers.items():
        assert answer.status_code == expected.get(what, 200), (what, answer.text)
        assert answer.headers.get_list("x-content-type-options") == ["nosniff"], what
    assert MARKUP in answers["LOCK held: 423"].text  # the text the header is for
    assert MARKUP in answers["locks"].text
    assert MARKUP in answers["a name quoted: 400"].json()["message"]


def test_an_answer_the_connection_gives_before_the_app_says_nosniff(
    serve: Callable[..., StatekeeperServer],
) -> None:
    server = serve()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /x HTTP/7.0\r\nHost: 127.0.0.1\r\n\r\n")
        status, headers, error = refusal(until_closed(sock))
    assert (status, error["error"]) == (400, "bad_request"), json.dumps(error)
    assert headers["x-content-type-options"] == "nosniff"
