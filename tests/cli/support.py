"""What the CLI's tests on states real Terraform wrote share: a configuration, a workdir."""

from __future__ import annotations

from collections.abc import Callable

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform

#: One resource whose input is ``var.v``, an apply that sleeps ``var.sleep`` seconds
#: (long enough to be killed while it holds the lock), and an output of the input.
CONFIG = """
variable "v" {
  type = string
}
variable "sleep" {
  type    = number
  default = 0
}
resource "terraform_data" "a" {
  input = var.v
  provisioner "local-exec" {
    command = "sleep ${var.sleep}"
  }
}
output "o" {
  value = terraform_data.a.output
}
"""


def embedded_store(server: StatekeeperServer) -> str:
    """The ``--store`` URL of a server's embedded database, for the CLI beside it."""
    return f"sqlite:///{server.workdir / '.statekeeper' / 'statekeeper.db'}"


def terraform_through(
    server: StatekeeperServer, terraform: Callable[..., Terraform], name: str, config: str
) -> Terraform:
    """Terraform with ``backend "http"`` on ``server`` for the state ``name``, initialised."""
    tf = terraform().write(server.backend_block(name) + config)
    tf.run("init").check()
    return tf
