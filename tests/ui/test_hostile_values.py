"""What callers wrote, made to be markup, on every page that shows it, in a real Chromium:
resource names, modules, providers, attribute values, outputs, a lock's fields, an
actor in the audit trail and a search. No element the values spell is made, no script
runs, no link leads to ``javascript:``, no bidirectional override reaches the text, and
every page says ``script-src 'none'``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.security.support import basic, make_tokens

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import instance, state_bytes

NAME = "team/hostile.tfstate"
#: Each breaks out of a text node, an attribute (either quote) or a tag, or is a URL.
MARKUP = "\"'><img src=x onerror=alert(1)><script>alert(2)</script><svg onload=alert(3)>"
URL = "javascript:alert(4)"
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: the rest of its line shown reversed
LOCK_ID = f"lock{MARKUP}"
#: Elements and attributes none of the pages has of its own: any one is a value's.
INJECTED = (
    "script, iframe, object, embed, img[src='x'], svg[onload], [onerror], [onload],"
    " [onclick], a[href^='javascript:'], form[action^='javascript:']"
)


@dataclass
class Site:
    server: StatekeeperServer
    secret: str

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = basic("root", self.secret)
        return httpx.request(method, self.server.url + path, headers=headers, **kwargs)


def _hostile(serial: int, value: str) -> bytes:
    resource = instance(
        "terraform_data",
        f"x{MARKUP}",
        {"id": value, "input": URL, "note": f"{RLO}gnp.exe"},
        module=f"module.m{MARKUP}",
        index_key=f"k{MARKUP}",
    )
    resource["provider"] = f'provider["registry.terraform.io/{MARKUP}/{RLO}x"]'
    outputs = {f"out{MARKUP}": {"value": value, "type": "string"}, "link": {"value": URL}}
    return state_bytes(serial, resources=[resource], outputs=outputs)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir: Path = tmp_path_factory.mktemp("hostile") / "server"
    secret = make_tokens(workdir, {"root": ["**:admin"]})["root"]
    server = StatekeeperServer(workdir).start()
    site = Site(server, secret)
    try:
        assert site.api("POST", f"/state/{NAME}", content=_hostile(1, "v1")).status_code == 200
        lock = {
            "ID": LOCK_ID,
            "Operation": f"OperationTypeApply{MARKUP}",
            "Info": f"{MARKUP}{URL}",
            "Who": f"mallory{MARKUP}",
            "Version": "1.15.0",
            "Created": "2026-01-01T00:00:00Z",
            "Path": MARKUP,
        }
        locked = site.api("LOCK", f"/state/{NAME}", content=json.dumps(lock))
        assert locked.status_code == 200, locked.text
        # A version written under that lock: its ID is on the timeline.
        written = site.api(
            "POST",
            f"/state/{NAME}",
            params={"ID": LOCK_ID},
            content=_hostile(2, f"v2{MARKUP}{RLO}"),
        )
        assert written.status_code == 200, written.text
        # A failed sign-in is audited under the name it claimed.
        with httpx.Client(base_url=server.url) as client:
            form = client.get("/ui/signin").text
            csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            failed = client.post(
                "/ui/signin", data={"csrf": csrf, "token": f"eve{MARKUP}", "secret": "x"}
            )
            assert failed.status_code == 401
        yield site
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(browser: Any, site: Site) -> Iterator[Any]:
    ctx = browser.new_context()
    page = ctx.new_page()
    ran: list[str] = []
    page.on("dialog", lambda dialog: (ran.append(dialog.message), dialog.dismiss()))
    # A script the policy blocked is one a value smuggled in: Chromium says so here.
    page.on("console", lambda msg: ran.append(msg.text) if "Security Policy" in msg.text else None)
    page.on("pageerror", lambda exc: ran.append(str(exc)))
    page.ran = ran
    page.goto(site.server.url + "/ui/signin")
    page.get_by_label("Token name").fill("root")
    page.get_by_label("Secret").fill(site.secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(site.server.url + "/")
    yield page
    ctx.close()


PAGES = [
    "/",
    f"/ui/state/{NAME}",
    f"/ui/state/{NAME}?version=1",
    f"/ui/state/{NAME}?" + str(httpx.QueryParams({"reveal": f"out{MARKUP}"})),
    f"/ui/diff/{NAME}?from=1&to=2",
    f"/ui/rollback/{NAME}?to=1",
    "/ui/locks",
    f"/ui/unlock/{NAME}",
    "/ui/audit",
    "/ui/search?" + str(httpx.QueryParams({"q": "hostile"})),
    "/ui/search?" + str(httpx.QueryParams({"q": "terraform_data state:team/**"})),
    "/ui/search?" + str(httpx.QueryParams({"q": f"'{MARKUP}'"})),
    "/ui/search?" + str(httpx.QueryParams({"q": MARKUP})),
    "/ui/search?" + str(httpx.QueryParams({"q": f"onerror {URL}"})),
    # Parsed, so echoed in the heading over the hits too.
    "/ui/search?" + str(httpx.QueryParams({"q": "<img src=x onerror=alert(5)>"})),
    "/ui/audit?" + str(httpx.QueryParams({"actor": MARKUP, "outcome": MARKUP})),
]


@pytest.mark.parametrize("path", PAGES)
def test_values_written_as_markup_are_text_on_every_page(site: Site, page: Any, path: str) -> None:
    answer = page.goto(site.server.url + path)
    assert answer is not None and answer.status < 500, (path, answer.status if answer else None)
    policy = answer.headers.get("content-security-policy", "")
    assert "script-src 'none'" in policy, (path, policy)
    assert page.locator(INJECTED).count() == 0, (path, page.content())
    text = page.locator("body").inner_text()
    assert RLO not in text, path
    assert page.ran == [], (path, page.ran)


def test_the_values_are_on_the_pages_as_written(site: Site, page: Any) -> None:
    # What the test above found no markup of is there, as text (not dropped).
    page.goto(site.server.url + f"/ui/state/{NAME}")
    text = page.locator("body").text_content()  # the attribute views' closed too
    assert f"module.m{MARKUP}" in text
    assert "<script>alert(2)</script><svg onload=alert(3)>\\u202e" in text  # output v2
    assert f"{LOCK_ID}" in text  # the timeline's lock ID
    page.goto(site.server.url + "/ui/locks")
    assert f"mallory{MARKUP}" in page.locator("body").inner_text()
    page.goto(site.server.url + "/ui/audit")
    assert f"eve{MARKUP}"[:60] in page.locator("body").inner_text()  # as audited: cut at 64
    page.goto(site.server.url + "/ui/search?" + str(httpx.QueryParams({"q": "onerror"})))
    assert f"x{MARKUP}" in page.locator("body").inner_text()
