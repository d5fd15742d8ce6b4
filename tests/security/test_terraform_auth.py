"""Real Terraform with tokens in its backend block, and terraform_remote_state on outputs only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.security.support import basic, make_tokens

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform

pytestmark = pytest.mark.terraform

PRODUCER = """
resource "terraform_data" "db" { input = "db-password-42" }
output "endpoint" { value = "https://db.example.test" }
"""


def _backend(server: StatekeeperServer, name: str, user: str, password: str) -> str:
    return server.backend_block(name, username=user, password=password)


def test_token_in_backend_block(
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    terraform: Callable[..., Terraform],
) -> None:
    secrets = make_tokens(
        tmp_path / "server", {"deployer": ["team/*:write"], "viewer": ["team/*:read"]}
    )
    # Access log on, to show that credentials never reach it.
    server = serve("--log-level", "info", workdir=tmp_path / "server")

    good = terraform("good")
    good.write(_backend(server, "team/app.tfstate", "deployer", secrets["deployer"]) + PRODUCER)
    good.run("init").check()
    good.run("apply").check()
    assert "No changes" in good.run("plan").check().stdout

    wrong = terraform("wrong")
    wrong.write(_backend(server, "team/app.tfstate", "deployer", "skt_not-the-secret") + PRODUCER)
    result = wrong.run("init")
    assert result.returncode != 0
    assert "HTTP remote state endpoint requires auth" in result.output

    # A read-only token can plan without a lock but cannot take the lock to apply.
    viewer = terraform("viewer")
    viewer.write(_backend(server, "team/app.tfstate", "viewer", secrets["viewer"]) + PRODUCER)
    viewer.run("init").check()
    assert "No changes" in viewer.run("plan", "-lock=false").check().stdout
    result = viewer.run("apply")
    assert result.returncode != 0
    assert "HTTP remote state endpoint invalid auth" in result.output

    # Outside its grant, even init fails: nothing is revealed about the state.
    other = terraform("other")
    other.write(_backend(server, "ops/app.tfstate", "deployer", secrets["deployer"]) + PRODUCER)
    result = other.run("init")
    assert result.returncode != 0
    assert "HTTP remote state endpoint invalid auth" in result.output

    # The secrets never reach the server log (uvicorn logs method, path and query only).
    log = server.log()
    assert "GET /state/team/app.tfstate" in log
    assert secrets["deployer"] not in log
    assert secrets["viewer"] not in log
    assert "Basic " not in log


def test_remote_state_through_outputs_only_token(
    tmp_path: Path,
    serve: Callable[..., StatekeeperServer],
    terraform: Callable[..., Terraform],
) -> None:
    secrets = make_tokens(
        tmp_path / "server",
        {"producer": ["network/*:write"], "consumer": ["network/*:outputs", "app/*:write"]},
    )
    server = serve(workdir=tmp_path / "server")
    producer = terraform("producer")
    producer.write(
        _backend(server, "network/core.tfstate", "producer", secrets["producer"]) + PRODUCER
    )
    producer.run("init").check()
    producer.run("apply").check()

    address = server.state_url("network/core.tfstate")
    consumer = terraform("consumer")
    consumer.write(
        _backend(server, "app/web.tfstate", "consumer", secrets["consumer"])
        + f"""
data "terraform_remote_state" "network" {{
  backend = "http"
  config = {{
    address  = "{address}"
    username = "consumer"
    password = "{secrets["consumer"]}"
  }}
}}
output "db_endpoint" {{ value = data.terraform_remote_state.network.outputs.endpoint }}
"""
    )
    consumer.run("init").check()
    consumer.run("apply").check()
    out = consumer.run("output", "-raw", "db_endpoint").check().stdout
    assert out == "https://db.example.test"

    # What the consumer's token reads is the outputs and nothing of the resources.
    r = httpx.get(address, headers=basic("consumer", secrets["consumer"]))
    assert r.status_code == 200
    assert r.json()["resources"] == []
    assert "db-password-42" not in r.text
