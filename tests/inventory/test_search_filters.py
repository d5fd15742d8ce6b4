"""Search filters combine as words do, an empty one is refused, and a search has one
length limit: the API, the UI's search page and the CLI alike (docs/inventory.md).

A real ``statekeeper serve`` with access control on; the CLI through ``--server``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.security.support import bearer, make_tokens, signed_in

from statekeeper.errors import BadRequest
from statekeeper.inventory.query import FIELDS, MAX_QUERY, parse_query
from statekeeper.testing.processes import SRC, StatekeeperServer
from statekeeper.testing.statefiles import state_bytes


def _resource(type_: str, name: str) -> dict[str, Any]:
    return {
        "mode": "managed",
        "type": type_,
        "name": name,
        "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
        "instances": [{"schema_version": 0, "attributes": {"id": f"{name}-id"}}],
    }


STATES = {
    "team/app.tfstate": [_resource("aws_s3_bucket", "logs"), _resource("aws_db_instance", "main")],
    "team/prod.tfstate": [_resource("aws_s3_bucket", "prodlogs")],
    "other/prod.tfstate": [_resource("aws_s3_bucket", "elsewhere")],
    # One segment deeper, with a type of its own, so that the sets below stay as they are.
    "team/web/prod.tfstate": [_resource("aws_cloudfront_distribution", "web")],
}


class Served:
    def __init__(self, server: StatekeeperServer, workdir: Path, secret: str) -> None:
        self.server = server
        self.workdir = workdir
        self.secret = secret
        self.client = httpx.Client(base_url=server.url, timeout=30, headers=bearer(secret))

    def search(self, q: str) -> httpx.Response:
        return self.client.get("/api/v1/search", params={"q": q})

    def hits(self, q: str) -> set[tuple[str, str]]:
        r = self.search(q)
        assert r.status_code == 200, (q, r.text)
        return {(h["state"], h["address"]) for h in r.json()["hits"]}

    def cli(self, *args: str | bytes) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STATEKEEPER_")}
        env |= {"PYTHONPATH": str(SRC), "STATEKEEPER_TOKEN": self.secret}
        return subprocess.run(
            [sys.executable, "-m", "statekeeper", "--server", self.server.url, *args],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir: Path = tmp_path_factory.mktemp("search-filters")
    secrets = make_tokens(workdir, {"root": ["**:admin"]})
    server = StatekeeperServer(workdir, env={"STATEKEEPER_RATE_LIMIT": "0"}).start()
    try:
        served = Served(server, workdir, secrets["root"])
        for name, resources in STATES.items():
            r = served.client.post(f"/state/{name}", content=state_bytes(1, resources=resources))
            assert r.status_code == 200, r.text
        yield served
    finally:
        server.stop()


def test_a_repeated_filter_must_match_too(served: Served) -> None:
    assert served.hits("state:team/** state:*/prod.tfstate") == {
        ("team/prod.tfstate", "aws_s3_bucket.prodlogs")
    }
    assert served.hits("state:*/prod.tfstate state:team/**") == {
        ("team/prod.tfstate", "aws_s3_bucket.prodlogs")
    }
    # docs/inventory.md's example: the prod states under team/ at any depth, where
    # '*/prod.tfstate' would stop at team/prod.tfstate.
    assert served.hits("state:team/** state:**/prod.tfstate") == {
        ("team/prod.tfstate", "aws_s3_bucket.prodlogs"),
        ("team/web/prod.tfstate", "aws_cloudfront_distribution.web"),
    }
    # A resource has one type: both cannot match.
    assert served.hits("type:aws_s3_bucket type:aws_db_instance") == set()
    assert served.hits("type:aws_db_instance") == {("team/app.tfstate", "aws_db_instance.main")}
    assert served.hits("provider:aws provider:hashicorp state:team/**") == {
        ("team/app.tfstate", "aws_s3_bucket.logs"),
        ("team/app.tfstate", "aws_db_instance.main"),
        ("team/prod.tfstate", "aws_s3_bucket.prodlogs"),
        ("team/web/prod.tfstate", "aws_cloudfront_distribution.web"),
    }


@pytest.mark.parametrize("typed", ["type:", "state:", "terraform:", "tf:", "name:", "provider:"])
def test_an_empty_filter_is_refused_naming_it(served: Served, typed: str) -> None:
    r = served.search(f"logs {typed}")
    assert r.status_code == 400, r.text
    assert f"the filter {typed} has no value" in r.json()["message"]


def test_the_ui_and_the_cli_refuse_an_empty_filter_too(served: Served) -> None:
    with signed_in(served.server.url, "root", served.secret) as ui:
        page = ui.get("/ui/search", params={"q": "type:"})
        assert page.status_code == 400, page.text
        assert "the filter type: has no value" in page.text
    cli = served.cli("search", "state:")
    assert cli.returncode == 2, (cli.stdout, cli.stderr)
    assert "the filter state: has no value" in cli.stderr


def test_the_search_page_names_every_filter(served: Served) -> None:
    with signed_in(served.server.url, "root", served.secret) as ui:
        page = ui.get("/ui/search")
    assert page.status_code == 200, page.text
    missing = [f for f in FIELDS if f"<code>{f}:" not in page.text]
    assert not missing, f"the search page's hint leaves out {missing}"


def test_one_length_limit_for_every_way_in(served: Served) -> None:
    longest = "logs " + "x" * (MAX_QUERY - 5)
    assert served.search(longest).status_code == 200
    too_long = longest + "x"
    r = served.search(too_long)
    assert r.status_code == 400, r.text
    assert f"at most {MAX_QUERY}" in r.json()["message"]
    with signed_in(served.server.url, "root", served.secret) as ui:
        assert ui.get("/ui/search", params={"q": longest}).status_code == 200
        page = ui.get("/ui/search", params={"q": "x" * 10_000})
        assert page.status_code == 400, page.text
        assert f"at most {MAX_QUERY}" in page.text
    cli = served.cli("search", too_long)
    assert cli.returncode == 2, (cli.stdout, cli.stderr)
    assert f"at most {MAX_QUERY}" in cli.stderr


@pytest.mark.parametrize(
    "typed",
    ["provider:%", "provider:_", "provider:hashicorp_aws", "module:%", "terraform:_", "tf:1%"],
)
def test_a_filters_value_is_matched_as_written_never_as_a_pattern(
    served: Served, typed: str
) -> None:
    # SQL's LIKE reads % and _ as wildcards: typed into a substring or prefix filter they
    # matched every resource (provider:%), or another character (hashicorp_aws finding
    # hashicorp/aws). No provider, module or version here holds them.
    assert served.hits(typed) == set()


def test_a_filters_value_may_hold_the_characters_like_reads(served: Served) -> None:
    assert served.hits("provider:hashicorp/aws state:other/**") == {
        ("other/prod.tfstate", "aws_s3_bucket.elsewhere")
    }
    assert served.hits("provider:registry.terraform.io/ state:other/**") == {
        ("other/prod.tfstate", "aws_s3_bucket.elsewhere")
    }


@pytest.mark.parametrize("typed", [b"type:\xff", b"provider:aws\xfe", b"logs\xff"])
def test_a_search_of_bytes_that_are_no_utf8_is_refused_naming_them(
    served: Served, typed: bytes
) -> None:
    # A command line's bytes arrive as lone surrogates: the store's index could not bind
    # them, nor a URL carry them (a traceback, both), and a word was searched without them.
    text = typed.decode("utf-8", "surrogateescape")
    with pytest.raises(BadRequest, match="which is no UTF-8 text"):
        parse_query(text)
    cli = served.cli("search", typed)
    assert cli.returncode == 2, (cli.stdout, cli.stderr)
    assert "which is no UTF-8 text" in cli.stderr
    assert "Traceback" not in cli.stderr


def test_a_word_or_filter_given_again_is_searched_once() -> None:
    # What must match is the same; each repeat cost the full-text index another pass
    # over its matches (`b* ` 166 times: 18 times as long as `b*`).
    assert parse_query("b* " * 166) == parse_query("b*")
    assert parse_query("logs bucket logs LOGS") == parse_query("logs bucket LOGS")
    twice = parse_query("type:aws_s3_bucket logs type:aws_s3_bucket")
    assert twice == parse_query("type:aws_s3_bucket logs")
