from __future__ import annotations

from collections.abc import Callable

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform


def test_apply_through_server(
    serve: Callable[..., StatekeeperServer], terraform: Callable[..., Terraform]
) -> None:
    server = serve()
    tf = terraform()
    tf.write(
        server.backend_block("team/app.tfstate")
        + """
resource "terraform_data" "a" { input = "x" }
output "o" { value = terraform_data.a.output }
"""
    )
    tf.run("init").check()
    tf.run("apply").check()
    plan = tf.run("plan", "-detailed-exitcode")
    assert plan.returncode == 0, plan.output
    assert "No changes" in plan.stdout
