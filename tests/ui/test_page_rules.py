"""What the UI's pages answer, over HTTP against a real ``statekeeper serve``: sign-out
ends a session on the server, a page view is one read in the audit trail, lock times
come from the server's clock, confirmation pages refuse up front what their button
could only fail to do, and the small things (error pages, values, icons) read right."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from markupsafe import escape
from tests.security.support import basic, make_tokens, state_json

from statekeeper.app import Services
from statekeeper.events import Action, Event
from statekeeper.settings import load_settings
from statekeeper.testing.processes import StatekeeperServer
from statekeeper.times import format_rfc3339

ROLES = {
    "root": ["**:admin"],
    "teamadmin": ["team/**:admin"],
    "reader": ["team/**:read"],
    "writer": ["team/**:write"],
}
LINEAGE = "5f0ec5b3-aaaa-bbbb-cccc-000000000001"


@dataclass
class Site:
    server: StatekeeperServer
    secrets: dict[str, str]

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = basic("root", self.secrets["root"])
        return httpx.request(method, self.server.url + path, headers=headers, **kwargs)

    def write(self, name: str, serial: int, **extra: object) -> None:
        data = state_json(serial, LINEAGE, **extra)
        assert self.api("POST", f"/state/{name}", content=data).status_code == 200

    @contextmanager
    def browser(self, token: str) -> Iterator[httpx.Client]:
        """A client signed in to the UI as ``token`` (redirects not followed)."""
        with httpx.Client(base_url=self.server.url, follow_redirects=False) as client:
            csrf = _csrf(client.get("/ui/signin").text)
            signed = client.post(
                "/ui/signin", data={"csrf": csrf, "token": token, "secret": self.secrets[token]}
            )
            assert signed.status_code == 303, signed.text
            yield client

    def reads(self, name: str) -> list[dict[str, Any]]:
        found = self.api("GET", "/api/v1/audit", params={"state": name, "action": "read"})
        assert found.status_code == 200
        events: list[dict[str, Any]] = found.json()["events"]
        return events


def _csrf(html: str) -> str:
    return html.split('name="csrf" value="', 1)[1].split('"', 1)[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("rules") / "server"
    secrets = make_tokens(workdir, ROLES)
    server = StatekeeperServer(workdir).start()
    yield Site(server, secrets)
    server.stop()


def test_a_copy_of_a_signed_out_session_cookie_is_no_session(site: Site) -> None:
    site.write("team/session.tfstate", 1)
    # ``kept``: another session of the same token.
    with site.browser("reader") as kept, site.browser("reader") as client:
        cookie = client.cookies["statekeeper_session"]
        assert client.get("/ui/state/team/session.tfstate").status_code == 200
        csrf = _csrf(client.get("/").text)
        out = client.post("/ui/signout", data={"csrf": csrf})
        assert (out.status_code, out.headers["location"]) == (303, "/ui/signin")
        # The copy, sent as it was (another browser, a stolen cookie).
        copy = {"Cookie": f"statekeeper_session={cookie}"}
        refused = httpx.get(site.server.url + "/ui/state/team/session.tfstate", headers=copy)
        assert refused.status_code == 303
        assert refused.headers["location"].startswith("/ui/signin")
        # A form posted with the copy and its CSRF token is refused too.
        posted = httpx.post(site.server.url + "/ui/signout", headers=copy, data={"csrf": csrf})
        assert posted.status_code == 403
        # Sign-out ends that session only, not the token's others.
        assert kept.get("/ui/state/team/session.tfstate").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/ui/signout",
        "/ui/signin",
        "/ui/unlock/team/forms.tfstate",
        "/ui/reap",
        "/ui/rollback/team/forms.tfstate",
        "/ui/delete/team/forms.tfstate",
        "/ui/restore/team/forms.tfstate",
    ],
)
def test_a_forged_csrf_token_is_refused_whatever_its_characters(site: Site, path: str) -> None:
    # A token is ASCII; a forged one need not be, and comparing it must still refuse it
    # (403, the form not acted on) rather than fail the request.
    site.write("team/forms.tfstate", 1)
    with site.browser("root") as client:
        for forged in ("é" * 32, "\u202e", "x\x00y"):
            answer = client.post(path, data={"csrf": forged, "to": "1", "confirm": "yes"})
            assert answer.status_code == 403, (path, forged, answer.text)
            assert "no valid CSRF token" in answer.text
        assert client.get("/ui/state/team/forms.tfstate").status_code == 200  # still signed in


@pytest.mark.parametrize(
    "sender",
    [
        {"Sec-Fetch-Site": "same-site"},  # a sibling subdomain's page
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://evil.example"},  # a browser without Sec-Fetch-Site
    ],
)
def test_a_form_another_page_sends_is_refused_with_the_sessions_csrf_token(
    site: Site, sender: dict[str, str]
) -> None:
    # SameSite=Lax sends the cookie to a page of the same site, which may also have set
    # a session of its own there, whose CSRF token it knows: to sign its visitor in.
    with httpx.Client(base_url=site.server.url, follow_redirects=False) as visitor:
        csrf = _csrf(visitor.get("/ui/signin").text)
        form = {"csrf": csrf, "token": "root", "secret": site.secrets["root"]}
        refused = visitor.post("/ui/signin", data=form, headers=sender)
        assert refused.status_code == 403, refused.text
        assert "the server takes no write from another" in refused.text
        assert visitor.get("/").status_code == 303  # not signed in
    site.write("team/elsewhere.tfstate", 1)
    with site.browser("root") as client:
        csrf = _csrf(client.get("/").text)
        for path in ("/ui/signout", "/ui/delete/team/elsewhere.tfstate"):
            refused = client.post(path, data={"csrf": csrf}, headers=sender)
            assert refused.status_code == 403, (path, refused.text)
        assert client.get("/ui/state/team/elsewhere.tfstate").status_code == 200  # kept
        # The server's own pages: same-origin.
        own = {"Sec-Fetch-Site": "same-origin", "Origin": site.server.url}
        deleted = client.post("/ui/delete/team/elsewhere.tfstate", data={"csrf": csrf}, headers=own)
        assert deleted.status_code == 303, deleted.text


def test_one_view_of_a_state_page_is_one_read(site: Site) -> None:
    name = "team/reads.tfstate"
    for serial in (1, 2, 3):
        site.write(name, serial)
    before = site.reads(name)
    with site.browser("reader") as client:
        page = client.get(f"/ui/state/{name}")
        assert page.status_code == 200
        assert "serial 1" in page.text or ">1<" in page.text  # the timeline read them all
    after = site.reads(name)
    new = after[len(before) :]
    assert [(e["actor"], e["outcome"], e["serial"]) for e in new] == [("reader", "ok", 3)]


def test_the_page_after_a_restore_is_one_read(site: Site) -> None:
    name = "team/restored.tfstate"
    site.write(name, 1)
    site.write(name, 2)
    assert site.api("DELETE", f"/state/{name}").status_code == 200
    before = site.reads(name)
    with site.browser("teamadmin") as client:
        csrf = _csrf(client.get("/").text)
        restored = client.post(f"/ui/restore/{name}", data={"csrf": csrf})
        assert restored.status_code == 303
        assert client.get(restored.headers["location"]).status_code == 200
    new = site.reads(name)[len(before) :]
    assert [(e["actor"], e["serial"]) for e in new] == [("teamadmin", 2)]
    restores = site.api("GET", "/api/v1/audit", params={"state": name, "action": "restore"})
    assert len(restores.json()["events"]) == 1


def _lock(site: Site, name: str, lock_id: str, created: str) -> None:
    body = {
        "ID": lock_id,
        "Operation": "OperationTypeApply",
        "Info": "",
        "Who": "ci@runner",
        "Version": "1.15.0",
        "Created": created,
        "Path": "",
    }
    assert site.api("LOCK", f"/state/{name}", json=body).status_code == 200


def _shown(rfc3339: str) -> str:
    """A time as the pages show it: 2026-01-02 03:04:05Z."""
    return rfc3339[:10] + " " + rfc3339[11:19] + "Z"


def test_a_lock_is_shown_since_the_servers_receive_time_not_the_clients_claim(
    site: Site,
) -> None:
    name = "team/claimed.tfstate"
    site.write(name, 1)
    lock_id = "22222222-0000-4000-8000-000000000002"
    _lock(site, name, lock_id, "9999-12-31T23:59:59Z")
    try:
        (held,) = [x for x in site.api("GET", "/api/v1/locks").json() if x["name"] == name]
        since = "since " + _shown(held["acquired"])
        with site.browser("root") as client:
            locks = client.get("/ui/locks").text
            assert since in locks
            assert "9999" not in locks
            confirm = client.get(f"/ui/unlock/{name}").text
            assert since in confirm
            assert "since 9999" not in confirm
            # The client's Created appears only as what the client claimed.
            assert "own clock claimed it was created 9999-12-31 23:59:59Z" in confirm
    finally:
        site.api("UNLOCK", f"/state/{name}")


def test_unlock_with_an_id_not_held_names_the_lock_that_is(site: Site) -> None:
    name = "team/other-lock.tfstate"
    site.write(name, 1)
    lock_id = "33333333-0000-4000-8000-000000000003"
    _lock(site, name, lock_id, "2026-01-01T00:00:00Z")
    try:
        with site.browser("root") as client:
            page = client.get(f"/ui/unlock/{name}", params={"id": "zzz"})
            assert page.status_code == 404
            assert "No lock with ID zzz is held on team/other-lock.tfstate" in page.text
            assert lock_id in page.text and "ci@runner" in page.text
            assert "not locked" not in page.text
    finally:
        site.api("UNLOCK", f"/state/{name}")


@pytest.mark.parametrize("token", ["reader", "writer"])
def test_confirmation_pages_refuse_a_caller_without_admin_up_front(site: Site, token: str) -> None:
    name = f"team/guarded-from-{token}.tfstate"
    site.write(name, 1)
    site.write(name, 2)
    lock_id = "44444444-0000-4000-8000-000000000004"
    _lock(site, name, lock_id, "2026-01-01T00:00:00Z")
    try:
        with site.browser(token) as client:
            for path, what in [
                (f"/ui/rollback/{name}?to=serial:1", "roll back"),
                (f"/ui/unlock/{name}", "force-unlock"),
                (f"/ui/delete/{name}", "delete"),
            ]:
                page = client.get(path)
                assert page.status_code == 403, path
                assert page.headers["content-type"].startswith("text/html")
                needed = f"{token} may not {what} {name}: it needs the 'admin' permission"
                assert escape(needed) in page.text, path
                assert 'type="submit" class="danger"' not in page.text, path
            # The reap's dry run lists the lock: confirming could only fail.
            csrf = _csrf(client.get("/").text)
            reap = client.post("/ui/reap", data={"csrf": csrf, "older_than": "0s"})
            assert reap.status_code == 403
            assert escape("needs the 'admin' permission") in reap.text
            # A state outside the caller's grants stays indistinguishable from a missing one.
            assert client.get("/ui/delete/other/x.tfstate").status_code == 404
        with site.browser("teamadmin") as client:
            assert client.get(f"/ui/rollback/{name}?to=serial:1").status_code == 200
            assert client.get(f"/ui/unlock/{name}").status_code == 200
            assert client.get(f"/ui/delete/{name}").status_code == 200
    finally:
        site.api("UNLOCK", f"/state/{name}")


def test_restore_is_offered_to_an_admin_of_the_state(site: Site) -> None:
    name = "team/binned.tfstate"
    site.write(name, 1)
    assert site.api("DELETE", f"/state/{name}").status_code == 200
    button = f'action="/ui/restore/{name}"'
    try:
        with site.browser("teamadmin") as client:
            assert button in client.get("/ui/trash").text
        with site.browser("reader") as client:
            trash = client.get("/ui/trash").text
            assert name in trash and button not in trash
    finally:
        with site.browser("root") as client:
            csrf = _csrf(client.get("/").text)
            assert client.post(f"/ui/restore/{name}", data={"csrf": csrf}).status_code == 303


def test_rollback_to_the_current_version_is_refused_up_front(site: Site) -> None:
    name = "team/current.tfstate"
    site.write(name, 1)
    site.write(name, 2)
    current = site.api("GET", f"/api/v1/states/{name}").json()["version"]["version_id"]
    with site.browser("root") as client:
        for to in ("current", "", current):
            page = client.get(f"/ui/rollback/{name}", params={"to": to})
            assert page.status_code == 400, to
            assert f"version {current} is already the current version of {name}" in page.text
            assert "Roll back to serial" not in page.text


def test_the_delete_page_says_the_trash_period_as_people_write_it(site: Site) -> None:
    site.write("team/period.tfstate", 1)
    with site.browser("root") as client:
        page = client.get("/ui/delete/team/period.tfstate").text
    assert "stays in the trash for 30 days," in page
    assert "0:00:00" not in page


def test_diff_and_rollback_show_a_value_as_written_and_as_text(site: Site) -> None:
    name = "team/markup.tfstate"
    evil = "<svg onload=alert(3)>"
    site.write(name, 1, outputs={"o": {"value": "plain", "type": "string"}})
    site.write(name, 2, outputs={"o": {"value": evil, "type": "string"}})
    with site.browser("root") as client:
        for path in (f"/ui/diff/{name}", f"/ui/rollback/{name}?to=serial:1"):
            page = client.get(path).text
            assert "&#34;&lt;svg onload=alert(3)&gt;&#34;" in page, path
            assert evil not in page, path  # text, never markup
            assert "\\u003c" not in page, path


def test_small_things_read_right(site: Site) -> None:
    icon = httpx.get(site.server.url + "/favicon.ico")  # no credentials
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert "www-authenticate" not in icon.headers
    with site.browser("root") as client:
        missing = client.get("/ui/static/missing")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("text/html")
        assert "There is no file named missing here." in missing.text
        bad = client.get("/ui/state/team/..%2Fx.tfstate")
        assert bad.status_code == 400
        title = re.search(r"<title>(.*?)</title>", bad.text)
        assert title is not None and title.group(1) == "Invalid state name · statekeeper"


def test_the_audit_pages_until_finds_events_older_than_the_newest_100000(
    tmp_path: Path,
) -> None:
    """The page asks the trail for events up to ``until``: taking the newest 100,000 first
    and filtering them after would miss every older match."""
    workdir = tmp_path / "server"
    secrets = make_tokens(workdir, {"root": ["**:admin"]})
    settings = load_settings({"data_dir": workdir / ".statekeeper"}, env={})
    old = datetime(2026, 1, 1, tzinfo=UTC)

    def row(actor: str, when: datetime) -> tuple[str, ...]:
        event = Event(action=Action.READ, actor=actor, state="team/x.tfstate", time=when)
        stamp = when.replace(tzinfo=None).isoformat("T", "microseconds") + "Z"
        return (stamp, "read", actor, "team/x.tfstate", "ok", event.json_text())

    # One event before ``until``, then 100,000 after it (the same one: only their
    # number matters).
    rows = [row("needle", old + timedelta(seconds=1))]
    rows += [row("hay", old + timedelta(days=1))] * 100_000
    services = Services.build(settings)
    try:
        database = services.store.records.database
        assert database is not None
        database.run(
            lambda c: c.executemany(
                "INSERT INTO audit (time, action, actor, state, outcome, event) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            ),
            write=True,
        )
    finally:
        services.close()
    server = StatekeeperServer(workdir).start()
    try:
        with Site(server, secrets).browser("root") as client:
            until = format_rfc3339(old + timedelta(seconds=5))
            page = client.get("/ui/audit", params={"until": until}, timeout=120)
            assert page.status_code == 200
            assert "needle" in page.text and "hay" not in page.text
    finally:
        server.stop()
