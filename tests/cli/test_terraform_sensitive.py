"""Sensitive values in states real Terraform wrote never reach diff, show or history.

``terraform_data`` with ``input = { user = "admin", password = var.pw }`` and
``pw`` sensitive: Terraform 1.15 marks ``[input, password]`` (through the
dynamically typed ``input``) and does not mark ``output``, its unmarked copy.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from tests.cli.conftest import CliFn
from tests.cli.support import embedded_store, terraform_through

from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.terraform import Terraform

pytestmark = pytest.mark.terraform

NAME = "team/db.tfstate"
CONFIG = """
variable "pw" {
  type      = string
  sensitive = true
}
variable "user" {
  type = string
}
resource "terraform_data" "db" {
  input = { user = var.user, password = var.pw }
}
output "pw" {
  value     = var.pw
  sensitive = true
}
"""
SECRETS = ("hunter2-first", "hunter3-second")


def test_diff_masks_what_terraform_marks_and_its_unmarked_copy(
    serve: Callable[..., StatekeeperServer],
    terraform: Callable[..., Terraform],
    cli_process: CliFn,
) -> None:
    server = serve()
    tf = terraform_through(server, terraform, NAME, CONFIG)
    tf.run("apply", "-var", f"pw={SECRETS[0]}", "-var", "user=admin").check()
    tf.run("apply", "-var", f"pw={SECRETS[1]}", "-var", "user=root").check()
    store = embedded_store(server)

    for backend in (["--store", store], ["--server", server.url]):
        text = cli_process(*backend, "diff", NAME)
        assert text.exit_code == 0, text.stderr
        assert "input.value.password: (sensitive) -> (sensitive)" in text.stdout
        assert "output.value.password: (sensitive) -> (sensitive)" in text.stdout
        assert 'input.value.user: "admin" -> "root"' in text.stdout, "the rest stays visible"
        assert "pw: (sensitive) -> (sensitive)" in text.stdout

        as_json = cli_process(*backend, "diff", NAME, "--json")
        d = json.loads(as_json.stdout)
        (changed,) = d["changed"]
        by_path = {c["path"]: c for c in changed["changes"]}
        for path in ("input.value.password", "output.value.password"):
            assert by_path[path] == {"path": path, "before": None, "after": None, "sensitive": True}
        assert by_path["output.value.user"]["after"] == "root"

        shown = cli_process(*backend, "show", NAME, "--json")
        history = cli_process(*backend, "history", NAME, "--json")
        for run in (text, as_json, shown, history):
            for secret in SECRETS:
                assert secret not in run.stdout and secret not in run.stderr
        assert json.loads(shown.stdout)["outputs"]["pw"] == {"value": None, "sensitive": True}
