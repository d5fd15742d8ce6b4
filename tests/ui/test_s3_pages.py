"""The UI in Chromium on a bucket and a lock table shared with Terraform's own
``backend "s3"``: a ``statekeeper serve`` on the moto server, its objects and lock
items written with plain boto3 as anyone with access to them can."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from statekeeper.testing.processes import MotoServer, StatekeeperServer
from statekeeper.testing.statefiles import state_bytes

pytestmark = pytest.mark.aws

BUCKET, TABLE = "ui-tfstate", "ui-locks"
NAME = "team/app.tfstate"
#: A key Terraform's backend "s3" accepts and statekeeper cannot address by name.
ODD = "team/my app.tfstate"
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: the rest of its line shown reversed
#: A holder written straight into a DynamoDB item (a LOCK through the server refuses it).
HOLDER = {
    "ID": f"held{RLO}-1",
    "Operation": "OperationTypeApply",
    "Info": f"deploy {RLO}drowssap",
    "Who": f"mallory@{RLO}exe.gnp",
    "Version": "1.15.5",
    "Created": "2026-12-07T15:00:00Z",
    "Path": f"{BUCKET}/{NAME}",
}


@pytest.fixture
def server(moto: MotoServer, serve: Callable[..., StatekeeperServer]) -> StatekeeperServer:
    moto.versioned_bucket(BUCKET)
    moto.lock_table(TABLE)
    s3, ddb = moto.client("s3"), moto.client("dynamodb")
    for key in (NAME, ODD):
        s3.put_object(Bucket=BUCKET, Key=key, Body=state_bytes(1))
    for key in (NAME, ODD):
        item = {"LockID": {"S": f"{BUCKET}/{key}"}, "Info": {"S": json.dumps(HOLDER)}}
        ddb.put_item(TableName=TABLE, Item=item)
    return serve("--store", f"s3://{BUCKET}", "--locks", f"dynamodb://{TABLE}", env=moto.env())


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    yield ctx.new_page()
    ctx.close()


def test_keys_that_are_no_state_name_are_named_on_the_states_and_locks_pages(
    server: StatekeeperServer, page: Any
) -> None:
    from playwright.sync_api import expect

    page.goto(server.url + "/")  # loopback without tokens: no sign-in
    expect(page.get_by_role("row", name=NAME)).to_be_visible()
    notice = page.get_by_role("status")
    expect(notice).to_contain_text("1 key(s) left out: 'team/my app.tfstate'")
    expect(notice).to_contain_text("not state names statekeeper can address")
    expect(notice).to_contain_text("copy it to a valid key")

    page.goto(server.url + "/ui/locks")
    expect(page.get_by_role("row", name=NAME)).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("1 lock(s) left out: 'team/my app.tfstate'")


def _search_once_indexed(page: Any, url: str, timeout: float = 30) -> None:
    """Open ``url``, again as the page asks while the server's first index build runs
    (the keys it left out are known when a listing of the bucket is done)."""
    deadline = time.monotonic() + timeout
    page.goto(url)
    while page.get_by_text("The index is being built").count():
        assert time.monotonic() < deadline, "the index was still being built"
        page.wait_for_timeout(200)
        page.goto(url)


def test_keys_that_are_no_state_name_are_named_on_the_search_page(
    server: StatekeeperServer, page: Any
) -> None:
    # Such a key is never indexed, so a search cannot find what its state holds: the
    # page says so, as `statekeeper search` does on stderr and the API in `unaddressable`.
    from playwright.sync_api import expect

    _search_once_indexed(page, server.url + "/ui/search")
    notice = page.get_by_role("status").filter(has_text="left out")
    expect(notice).to_contain_text("1 key(s) left out: 'team/my app.tfstate'")
    expect(notice).to_contain_text("copy it to a valid key")

    page.get_by_label("Resource, address").fill("type:terraform_data")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("Nothing matches.")).to_be_visible()
    expect(notice).to_contain_text("1 key(s) left out: 'team/my app.tfstate'")


def test_a_holders_bidi_override_is_shown_escaped_and_its_lock_still_unlocks(
    server: StatekeeperServer, page: Any, moto: MotoServer
) -> None:
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    badge = page.get_by_role("row", name=NAME).locator(".badge")
    expect(badge).to_contain_text("locked by mallory@\\u202eexe.gnp")
    assert RLO not in page.content()  # nor in a tooltip

    page.goto(server.url + "/ui/locks")
    holder = page.get_by_role("row", name=NAME).get_by_role("cell").first
    expect(holder).to_contain_text("mallory@\\u202eexe.gnp")
    expect(holder).to_contain_text("deploy \\u202edrowssap")
    expect(page.get_by_role("row", name=NAME).locator("code")).to_have_text("held\\u202e-1")
    assert RLO not in page.content()

    page.get_by_role("link", name=f"Force-unlock {NAME}").click()
    dialog = page.get_by_role("alertdialog")
    expect(dialog.locator("strong").first).to_have_text("mallory@\\u202eexe.gnp")
    expect(dialog.locator("code")).to_have_text("held\\u202e-1")
    assert RLO not in page.locator("body").inner_text()
    # The form sends the ID as it is held (a hidden field), not as it is shown.
    page.get_by_role("button", name=f"Force-unlock {NAME} held by").click()
    expect(page.get_by_role("status")).to_contain_text("removed the lock")
    item = moto.client("dynamodb").get_item(
        TableName=TABLE, Key={"LockID": {"S": f"{BUCKET}/{NAME}"}}, ConsistentRead=True
    )
    assert "Item" not in item
