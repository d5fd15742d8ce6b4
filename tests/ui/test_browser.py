"""The web UI in a real browser, against a real server and states written by real Terraform."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.security.support import make_tokens

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform

pytestmark = pytest.mark.terraform

ROLES = {
    "root": ["**:admin"],
    "writer": ["team/*:write"],
    "viewer": ["team/*:outputs"],
}
SECRET_VALUE = "hunter2-very-secret"

CONFIG = """
variable "n" { default = 1 }
variable "db_password" {
  default   = "SECRET"
  sensitive = true
}
resource "terraform_data" "bucket" {
  input = { name = "logs-bucket-${var.n}", arn = "arn:aws:s3:::logs-bucket-${var.n}" }
}
resource "terraform_data" "db" { input = var.db_password }
resource "terraform_data" "worker" {
  count = var.n
  input = "worker-${count.index}"
}
output "bucket" { value = terraform_data.bucket.output.name }
output "db_password" {
  value     = var.db_password
  sensitive = true
}
""".replace("SECRET", SECRET_VALUE)

SLOW = """
resource "terraform_data" "slow" {
  input = "slow"
  provisioner "local-exec" { command = "sleep 60" }
}
"""


@dataclass
class Site:
    server: StatekeeperServer
    secrets: dict[str, str]
    workdir: Path

    @property
    def url(self) -> str:
        return self.server.url

    def backend(self, name: str, token: str) -> str:
        return self.server.backend_block(name, username=token, password=self.secrets[token])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("ui")
    secrets = make_tokens(workdir / "server", ROLES)
    server = StatekeeperServer(workdir / "server").start()
    made = Site(server, secrets, workdir)
    tf = Terraform(workdir / "app").write(made.backend("team/app.tfstate", "root") + CONFIG)
    tf.run("init").check()
    tf.run("apply", "-var", "n=1").check()
    tf.run("apply", "-var", "n=3").check()
    try:
        yield made
    finally:
        server.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


def sign_in(page: Any, site: Site, token: str, start: str = "/") -> None:
    page.goto(site.url + start)
    page.get_by_label("Token name").fill(token)
    page.get_by_label("Secret").fill(site.secrets[token])
    page.get_by_role("button", name="Sign in").click()


def test_a_browser_is_sent_to_sign_in_never_challenged(site: Site) -> None:
    r = httpx.get(site.url + "/", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/ui/signin")
    assert "www-authenticate" not in r.headers
    page = httpx.get(site.url + "/ui/signin")
    assert page.status_code == 200
    assert "www-authenticate" not in page.headers


def test_sign_in_browse_open_a_terraform_state_and_step_through_versions(
    site: Site, context: Any, shots: Path
) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(site.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.screenshot(path=shots / "signin.png")
    page.get_by_label("Token name").fill("root")
    page.get_by_label("Secret").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("does not match")
    sign_in(page, site, "root")

    expect(page.get_by_role("heading", name="States")).to_be_visible()
    row = page.get_by_role("row", name="team/app.tfstate")
    expect(row).to_contain_text("1.15")  # Terraform's version
    expect(row).to_contain_text("root")  # the last writer
    expect(row.get_by_role("cell").nth(1)).to_have_text("5")  # resources: bucket, db, 3 workers
    page.screenshot(path=shots / "states.png", full_page=True)

    page.get_by_role("link", name="team/app.tfstate").click()
    expect(page.get_by_role("heading", name="team/app.tfstate")).to_be_visible()
    outputs = page.locator("section", has=page.get_by_role("heading", name="Outputs"))
    expect(outputs).to_contain_text("logs-bucket-3")
    expect(outputs).to_contain_text("(sensitive)")
    assert SECRET_VALUE not in page.content()
    resources = page.locator("table.resources")
    expect(resources).to_contain_text("terraform_data.worker")
    page.locator("summary", has_text=re.compile(r"^terraform_data\.db$")).click()  # attributes
    expect(resources).to_contain_text("(sensitive)")
    assert SECRET_VALUE not in page.content()
    page.screenshot(path=shots / "state.png", full_page=True)

    # An explicit click reveals a sensitive output to a caller who may read it.
    page.get_by_role("link", name="Reveal db_password").click()
    expect(outputs).to_contain_text(SECRET_VALUE)

    # The timeline: the newer apply added two workers; step to the older version.
    timeline = page.locator("table.timeline")
    expect(timeline.get_by_role("row")).to_have_count(3)  # header + two versions
    newest = timeline.get_by_role("row").nth(1)
    expect(newest.locator("td.added")).to_have_text("2")
    expect(newest.locator("td.changed")).to_have_text("1")  # the bucket's name
    timeline.get_by_role("link", name="1", exact=True).click()
    expect(page.locator("#facts")).to_contain_text("Version")
    expect(page.locator("dl.facts dd").first).to_have_text("1")  # the serial
    expect(page.locator("table.resources")).not_to_contain_text("terraform_data.worker[1]")


def test_diff_two_versions(site: Site, context: Any, shots: Path) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    sign_in(page, site, "root", "/ui/state/team/app.tfstate")
    page.get_by_role("button", name="Compare").click()
    expect(page.get_by_role("heading", name="Added")).to_be_visible()
    added = page.locator("ul.added")
    expect(added).to_contain_text("terraform_data.worker[1]")
    expect(added).to_contain_text("terraform_data.worker[2]")
    changed = page.locator("h4.changed", has_text="terraform_data.bucket")
    expect(changed).to_be_visible()
    expect(page.locator("main")).to_contain_text("logs-bucket-1")
    expect(page.locator("main")).to_contain_text("logs-bucket-3")
    assert SECRET_VALUE not in page.content()
    page.screenshot(path=shots / "diff.png", full_page=True)


def test_find_a_resource_through_search(site: Site, context: Any, shots: Path) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    sign_in(page, site, "root", "/ui/search")
    page.get_by_label("Resource, address, attribute value").fill("arn:aws:s3:::logs-bucket*")
    page.get_by_role("button", name="Search").click()
    hits = page.locator("table.hits")
    expect(hits.get_by_role("row")).to_have_count(2)  # header + the bucket
    expect(hits).to_contain_text("terraform_data.bucket")
    counts = page.get_by_role("region", name="Resources by type")
    expect(counts).to_contain_text("terraform_data")
    page.screenshot(path=shots / "search.png", full_page=True)
    hits.get_by_role("link", name="team/app.tfstate").click()
    expect(page.get_by_role("heading", name="team/app.tfstate")).to_be_visible()
    # A secret is not searchable, and an outputs-only caller finds nothing.
    page.goto(site.url + "/ui/search?q=" + SECRET_VALUE)
    expect(page.locator("main")).to_contain_text("Nothing matches")
    viewer = context.browser.new_context()
    other = viewer.new_page()
    sign_in(other, site, "viewer", "/ui/search?q=terraform_data")
    expect(other.locator("main")).to_contain_text("Nothing matches")
    viewer.close()


def test_rollback_shows_the_diff_before_confirming(site: Site, context: Any, shots: Path) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    sign_in(page, site, "root", "/ui/state/team/app.tfstate")
    page.get_by_role("link", name="Roll back to serial").first.click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog).to_contain_text("terraform_data.worker[2]")  # removed by the rollback
    page.screenshot(path=shots / "rollback.png", full_page=True)
    page.get_by_role("button", name="Roll back to serial").click()
    expect(page.get_by_role("status")).to_contain_text("Rolled back")
    expect(page.locator("table.timeline").get_by_role("row")).to_have_count(4)


def _wait_for_lock(site: Site, name: str, timeout: float = 90) -> None:
    headers = {"Authorization": f"Bearer {site.secrets['root']}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        locks = httpx.get(site.url + "/api/v1/locks", headers=headers).json()
        if any(lock["name"] == name for lock in locks):
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} was never locked")


@pytest.fixture
def running_apply(site: Site) -> Iterator[subprocess.Popen[str]]:
    tf = Terraform(site.workdir / "slow").write(site.backend("team/slow.tfstate", "writer") + SLOW)
    tf.run("init").check()
    proc = tf.start("apply")
    try:
        _wait_for_lock(site, "team/slow.tfstate")
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def test_a_lock_held_by_a_running_apply_is_force_unlocked_by_an_admin_only(
    site: Site, browser: Any, running_apply: subprocess.Popen[str], shots: Path
) -> None:
    from playwright.sync_api import expect

    writer_ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = writer_ctx.new_page()
    sign_in(page, site, "writer", "/ui/locks")
    row = page.get_by_role("row", name="team/slow.tfstate")
    expect(row).to_contain_text("OperationTypeApply")
    expect(row.get_by_role("link", name="Force-unlock")).to_have_count(0)  # not offered
    page.goto(site.url + "/ui/unlock/team/slow.tfstate")  # and its confirmation refused
    expect(page.get_by_role("alert")).to_contain_text("needs the 'admin' permission")
    expect(page.get_by_role("button", name="Force-unlock")).to_have_count(0)
    writer_ctx.close()

    admin_ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = admin_ctx.new_page()
    sign_in(page, site, "root", "/ui/locks")
    page.screenshot(path=shots / "locks.png", full_page=True)
    page.get_by_role("link", name="Force-unlock team/slow.tfstate").click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog).to_contain_text("OperationTypeApply")
    holder = dialog.locator("strong").first.inner_text()
    assert holder  # the holder's Who, as Terraform sent it
    page.screenshot(path=shots / "unlock.png", full_page=True)
    page.get_by_role("button", name=f"Force-unlock team/slow.tfstate held by {holder}").click()
    expect(page.get_by_role("status")).to_contain_text("removed the lock")
    page.goto(site.url + "/ui/locks")
    expect(page.get_by_role("row", name="team/slow.tfstate")).to_have_count(0)

    page.goto(site.url + "/ui/audit?action=force-unlock")
    expect(page.locator("table.audit")).to_contain_text("root")
    expect(page.locator("table.audit")).to_contain_text("team/slow.tfstate")
    # The outcome is chosen from the known ones: the writer's refused attempt alone.
    page.get_by_label("Outcome").select_option("forbidden")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]outcome=forbidden(&|$)"))
    expect(page.get_by_label("Outcome")).to_have_value("forbidden")
    rows = page.locator("table.audit tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("writer")
    expect(rows).to_contain_text("forbidden")
    page.goto(site.url + "/ui/audit")
    page.screenshot(path=shots / "audit.png", full_page=False)
    admin_ctx.close()


def test_an_outputs_only_caller_sees_outputs_and_no_resources(site: Site, context: Any) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    sign_in(page, site, "viewer", "/ui/state/team/app.tfstate")
    expect(page.get_by_role("heading", name="Outputs")).to_be_visible()
    expect(page.locator("main")).to_contain_text("logs-bucket")
    expect(page.get_by_role("heading", name="Resources")).to_have_count(0)
    expect(page.get_by_role("heading", name="Versions")).to_have_count(0)
    assert "terraform_data" not in page.content()
    # A state outside the grants is answered like one that does not exist.
    missing = page.goto(site.url + "/ui/state/team/none.tfstate")
    assert missing is not None and missing.status == 404
    page.goto(site.url + "/ui/state/elsewhere/secret.tfstate")
    expect(page.get_by_role("alert")).to_contain_text("no state named")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(site.url + "/ui/state/team/app.tfstate")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_form_without_the_csrf_token_is_refused(site: Site, context: Any) -> None:
    page = context.new_page()
    sign_in(page, site, "root")
    # The browser's own cookies, a form body without the token: refused, nothing done.
    r = page.request.post(
        site.url + "/ui/rollback/team/app.tfstate",
        form={"to": "serial:1"},
        max_redirects=0,
    )
    assert r.status == 403
    assert "CSRF" in r.text()
    forged = page.request.post(
        site.url + "/ui/rollback/team/app.tfstate",
        form={"to": "serial:1", "csrf": "forged"},
        max_redirects=0,
    )
    assert forged.status == 403


def test_phone_width_is_readable(site: Site, browser: Any, shots: Path) -> None:
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = ctx.new_page()
    sign_in(page, site, "root")
    expect(page.get_by_role("link", name="team/app.tfstate")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at 390 px ({width} px wide)"
    page.screenshot(path=shots / "states-phone.png", full_page=True)
    ctx.close()


def test_api_docs_load_with_no_way_out(site: Site, context: Any, shots: Path) -> None:
    from playwright.sync_api import expect

    outside: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(site.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.goto(site.url + "/api/docs")
    expect(page.get_by_text("/api/v1/search", exact=True)).to_be_visible(timeout=15_000)
    assert outside == []
    page.screenshot(path=shots / "api-docs.png")


def test_delete_goes_to_the_trash_and_restore_brings_it_back(
    site: Site, context: Any, shots: Path
) -> None:
    from playwright.sync_api import expect

    from statekeeper.testing.statefiles import state_bytes

    name = "team/doomed.tfstate"
    data = state_bytes(4)
    auth = ("root", site.secrets["root"])
    httpx.post(f"{site.url}/state/{name}", content=data, auth=auth).raise_for_status()
    page = context.new_page()
    sign_in(page, site, "root", f"/ui/state/{name}")
    page.get_by_role("link", name="Delete this state").click()
    page.get_by_role("button", name=f"Delete {name}").click()
    expect(page.locator("main")).to_contain_text(name)
    assert httpx.get(f"{site.url}/state/{name}", auth=auth).status_code == 404
    page.screenshot(path=shots / "trash.png", full_page=True)
    page.get_by_role("button", name=f"Restore {name}").click()
    expect(page.get_by_role("status")).to_contain_text("Restored from the trash")
    assert httpx.get(f"{site.url}/state/{name}", auth=auth).content == data
    # Leave the site as it was for any later test.
    httpx.delete(f"{site.url}/state/{name}", auth=auth).raise_for_status()
    bearer = {"Authorization": f"Bearer {site.secrets['root']}"}
    httpx.delete(f"{site.url}/api/v1/trash/{name}", headers=bearer).raise_for_status()
