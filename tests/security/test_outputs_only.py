"""What an ``outputs`` grant reads: the current state's outputs, never an older version,
never a listing; and a 403 that names the least permission that would do.

A real ``statekeeper serve`` with access control on. ``team/app.tfstate`` has two
versions whose sensitive output differs: the old password must not reach an
``outputs``-only caller by any route that takes ``?version=``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from tests.security.support import basic, lock_body, make_tokens, signed_in

from statekeeper.testing.processes import StatekeeperServer

NAME = "team/app.tfstate"
OLD_PASSWORD, NEW_PASSWORD = "hunter2-old", "correcthorse-new"
ROLES = {
    "root": ["**:admin"],
    "consumer": ["team/**:outputs"],
    "reader": ["team/**:read"],
    "scraper": ["**:metrics"],
}


def _state(serial: int, password: str) -> bytes:
    return json.dumps(
        {
            "version": 4,
            "terraform_version": "1.15.0",
            "serial": serial,
            "lineage": "0e1c0000-aaaa-bbbb-cccc-000000000001",
            "outputs": {
                "db_password": {"value": password, "type": "string", "sensitive": True},
                "url": {"value": "https://app.test", "type": "string"},
            },
            "resources": [],
            "check_results": None,
        }
    ).encode()


class Served:
    def __init__(self, server: StatekeeperServer, secrets: dict[str, str]) -> None:
        self.server = server
        self.secrets = secrets
        self.client = httpx.Client(base_url=server.url, timeout=30)

    def get(self, role: str, path: str, **params: str) -> httpx.Response:
        return self.client.get(path, params=params, headers=basic(role, self.secrets[role]))

    def browser(self, role: str) -> AbstractContextManager[httpx.Client]:
        return signed_in(self.server.url, role, self.secrets[role])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir: Path = tmp_path_factory.mktemp("outputs-only")
    secrets = make_tokens(workdir, ROLES)
    server = StatekeeperServer(workdir, env={"STATEKEEPER_RATE_LIMIT": "0"}).start()
    try:
        served = Served(server, secrets)
        for serial, password in ((1, OLD_PASSWORD), (2, NEW_PASSWORD)):
            r = served.client.post(
                f"/state/{NAME}",
                content=_state(serial, password),
                headers=basic("root", secrets["root"]),
            )
            assert r.status_code == 200, r.text
        lock = served.client.request(
            "LOCK",
            f"/state/{NAME}",
            content=lock_body(str(uuid.uuid4())),
            headers=basic("root", secrets["root"]),
        )
        assert lock.status_code == 200, lock.text
        yield served
    finally:
        server.stop()


def _versions(served: Served) -> tuple[str, str]:
    """(old, current) version IDs, as the root token's history lists them."""
    r = served.get("root", f"/api/v1/versions/{NAME}")
    assert r.status_code == 200, r.text
    current, old = (v["version_id"] for v in r.json())
    return old, current


def test_an_older_version_needs_read_on_every_route(served: Served) -> None:
    old, current = _versions(served)
    routes = {
        "content": f"/api/v1/content/{NAME}",
        "show": f"/api/v1/states/{NAME}",
    }
    for route, path in routes.items():
        for ref in (old, "serial:1"):
            refused = served.get("consumer", path, version=ref)
            assert refused.status_code == 403, (route, ref, refused.text)
            assert "'read'" in refused.json()["message"], (route, ref)
            assert OLD_PASSWORD not in refused.text
        # The current version, named or not, is what terraform_remote_state reads.
        for params in ({}, {"version": current}, {"version": "current"}):
            r = served.get("consumer", path, **params)
            assert r.status_code == 200, (route, params, r.text)
        # A reader reads history.
        assert served.get("reader", path, version=old).status_code == 200, route
    pulled = served.get("consumer", routes["content"], version=current)
    assert json.loads(pulled.content)["outputs"]["db_password"]["value"] == NEW_PASSWORD
    assert OLD_PASSWORD in served.get("reader", routes["content"], version=old).text

    with served.browser("consumer") as ui:
        page = ui.get(f"/ui/state/{NAME}", params={"version": old})
        assert page.status_code == 403, page.text
        assert OLD_PASSWORD not in page.text
        assert "&#39;read&#39;" in page.text or "'read'" in page.text
        assert ui.get(f"/ui/state/{NAME}", params={"version": current}).status_code == 200
    with served.browser("reader") as ui:
        assert ui.get(f"/ui/state/{NAME}", params={"version": old}).status_code == 200


def test_listings_need_read(served: Served) -> None:
    for path in ("/api/v1/states", "/api/v1/locks"):
        assert served.get("consumer", path).json() == [], path
        listed = {row["name"] for row in served.get("reader", path).json()}
        assert listed == {NAME}, path


def test_a_refusal_names_the_least_permission_that_would_do(served: Served) -> None:
    refused = served.get("scraper", f"/api/v1/states/{NAME}")
    assert refused.status_code == 403, refused.text
    message = refused.json()["message"]
    assert "'outputs'" in message and "'read'" not in message, message
    terraform = served.get("scraper", f"/state/{NAME}")
    assert terraform.status_code == 403
    assert "'outputs'" in terraform.text, terraform.text
