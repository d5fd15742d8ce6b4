from __future__ import annotations

from collections.abc import Callable

import pytest
from watch import get_state

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform


@pytest.mark.terraform
@pytest.mark.parametrize("update_method", ["POST", "PUT"])
def test_apply_through_server(
    serve: Callable[..., StatekeeperServer],
    terraform: Callable[..., Terraform],
    update_method: str,
) -> None:
    server = serve()
    tf = terraform()
    tf.write(
        server.backend_block("team/app.tfstate", update_method=update_method)
        + """
resource "terraform_data" "a" { input = "x" }
output "o" { value = terraform_data.a.output }
"""
    )
    tf.run("init").check()
    tf.run("apply").check()
    assert b'"terraform_data"' in (get_state(server, "team/app.tfstate") or b"")
    plan = tf.run("plan", "-detailed-exitcode")
    assert plan.returncode == 0, plan.output
    assert "No changes" in plan.stdout
