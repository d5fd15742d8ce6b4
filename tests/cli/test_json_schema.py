"""Every ``--json`` output matches the schema the API publishes for the same operation.

A real ``statekeeper serve`` publishes ``/openapi.json``; each command runs as
a real process on the server's store (``--store``) and through its API
(``--server``), and what it prints is validated against the response schema
of the operation it stands for, with every object closed (no key the schema
does not name). A last check makes sure no documented JSON answer is left
without a command that prints it, unless it is listed here as API-only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from tests.cli.conftest import CliFn

from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.testing.processes import StatekeeperServer
from statekeeper.testing.statefiles import instance, state_bytes

NAME = "team/app.tfstate"
PW = [[{"type": "get_attr", "value": "input"}, {"type": "get_attr", "value": "password"}]]

#: Operations with a JSON answer that no command prints.
API_ONLY = {
    ("delete", "/api/v1/tokens/{name}"),  # token revoke prints a sentence
}


def _closed(node: Any) -> Any:
    """The schema with every object closed to the properties it names."""
    if isinstance(node, dict):
        out = {k: _closed(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


class Schemas:
    def __init__(self, openapi: dict[str, Any]) -> None:
        self.openapi = openapi
        self.components = _closed(openapi["components"])
        self.checked: set[tuple[str, str]] = set()

    def response(self, method: str, path: str, status: str = "200") -> dict[str, Any]:
        op = self.openapi["paths"][path][method]
        schema: dict[str, Any] = op["responses"][status]["content"]["application/json"]["schema"]
        return schema

    def validate(self, method: str, path: str, doc: Any, *, item_of: str | None = None) -> None:
        """``doc`` against the answer of METHOD PATH (or its ``item_of`` member: the CLI
        prints the list the API wraps in an object)."""
        schema = self.response(method, path)
        if item_of is not None:
            ref = schema["$ref"].rsplit("/", 1)[1]
            schema = self.openapi["components"]["schemas"][ref]["properties"][item_of]
        validator = Draft202012Validator({**schema, "components": self.components})
        errors = sorted(validator.iter_errors(doc), key=str)
        assert not errors, f"{method.upper()} {path}: {errors[0]}"
        self.checked.add((method, path))

    def json_operations(self) -> set[tuple[str, str]]:
        found = set()
        for path, ops in self.openapi["paths"].items():
            for method, op in ops.items():
                ok = op.get("responses", {}).get("200", {}).get("content", {})
                if "schema" in ok.get("application/json", {}) and ok["application/json"]["schema"]:
                    found.add((method, path))
        return found


def _state(serial: int) -> bytes:
    return state_bytes(
        serial,
        resources=[
            instance(
                "terraform_data",
                "db",
                {"input": {"value": {"password": f"pw-{serial}"}, "type": "dynamic"}},
                sensitive=PW,
            ),
            *([instance("terraform_data", "extra", {"x": serial})] if serial % 2 else []),
        ],
        outputs={"o": {"value": serial, "type": "number"}},
    )


@pytest.mark.parametrize("mode", ["store", "server"])
def test_every_json_output_matches_the_published_schema(
    serve: Callable[..., StatekeeperServer], cli_process: CliFn, mode: str
) -> None:
    server = serve()
    schemas = Schemas(httpx.get(server.url + "/api/v1/openapi.json").json())
    db = server.workdir / ".statekeeper" / "statekeeper.db"
    backend = ["--store", f"sqlite:///{db}"] if mode == "store" else ["--server", server.url]

    def run(*args: str, input: bytes | None = None) -> Any:
        result = cli_process(*backend, *args, input=input)
        assert result.exit_code == 0, (args, result.stderr)
        return json.loads(result.stdout)

    for serial in (1, 2):
        pushed = run("push", NAME, "-", "--json", input=_state(serial))
        schemas.validate("put", "/api/v1/content/{name}", pushed)
    schemas.validate("get", "/api/v1/states", run("states", "--json"))
    schemas.validate("get", "/api/v1/states", run("states", "--details", "--json"))
    schemas.validate("get", "/api/v1/states/{name}", run("show", NAME, "--json"))
    schemas.validate("get", "/api/v1/versions/{name}", run("history", NAME, "--json"))
    schemas.validate("get", "/api/v1/diff/{name}", run("diff", NAME, "--json"))
    schemas.validate(
        "get", "/api/v1/diff/{name}", run("diff", NAME, "serial:2", "serial:1", "--json")
    )
    rolled = run("rollback", NAME, "--to", "serial:1", "--yes", "--json")
    schemas.validate("post", "/api/v1/rollback/{name}", rolled)

    held = LockInfo.new("OperationTypeApply", "bob@ci")
    assert httpx.request("LOCK", server.state_url(NAME), content=held.body).status_code == 200
    schemas.validate("get", "/api/v1/locks", run("locks", "--json"))
    reaped = run("locks", "reap", "--older-than", "0s", "--dry-run", "--json")
    assert reaped, "a lock to reap"
    schemas.validate("post", "/api/v1/reap", reaped)
    schemas.validate("delete", "/api/v1/locks/{name}", run("unlock", NAME, "--force", "--json"))
    found = run("search", "terraform_data", "--json")
    assert found["hits"], "the pushed state's resources are found"
    schemas.validate("get", "/api/v1/search", found)
    schemas.validate("get", "/api/v1/inventory", run("search", "--counts", "--json"))

    # An error answer has the published error shape.
    missing = httpx.get(server.url + "/api/v1/states/team/none.tfstate")
    assert missing.status_code == 404
    error = schemas.response("get", "/api/v1/states/{name}", "404")
    Draft202012Validator({**error, "components": schemas.components}).validate(missing.json())

    if mode == "store":
        # Tokens and the audit trail are read from the store (--server does not reach them).
        # Last: with a token in the store, the server asks every caller for one.
        data_dir = str(server.workdir / ".statekeeper")
        created = run(
            "token", "create", "ci", "--scope", "team/*:write", "--data-dir", data_dir, "--json"
        )
        schemas.validate("post", "/api/v1/tokens", created)
        tokens = run("token", "list", "--data-dir", data_dir, "--json")
        schemas.validate("get", "/api/v1/tokens", tokens, item_of="tokens")
        events = run("audit", "--data-dir", data_dir, "--json")
        assert events
        schemas.validate("get", "/api/v1/audit", events, item_of="events")
        # Webhooks live in the store's outbox: listed and logged here as the API does.
        allow = {"STATEKEEPER_HOOKS_ALLOW": "127.0.0.1"}
        added = cli_process(
            *backend, "hooks", "add", "ci", "--url", "http://127.0.0.1:9/hook", env=allow
        )
        assert added.exit_code == 0, added.stderr
        hooks = run("hooks", "list", "--json")
        assert [h["name"] for h in hooks] == ["ci"]
        schemas.validate("get", "/api/v1/hooks", hooks, item_of="hooks")
        deliveries = run("hooks", "deliveries", "--json")
        schemas.validate("get", "/api/v1/hooks/deliveries", deliveries, item_of="deliveries")
        redelivered = run("hooks", "redeliver", "ci", "--all", "--json")
        schemas.validate("post", "/api/v1/hooks/{name}/redeliver", redelivered)
        # History hygiene: prune (rules from a config file) and the trash.
        rules = server.workdir / "history.toml"
        rules.write_text('[history]\n[[history.retention]]\nstates = "**"\nkeep_last = 1\n')
        pruned = run("--config", str(rules), "prune", "--dry-run", "--json")
        assert pruned, "the rolled-back state has a version to prune"
        schemas.validate("post", "/api/v1/prune", pruned)
        assert cli_process(*backend, "delete", NAME).exit_code == 0
        schemas.validate("get", "/api/v1/trash", run("trash", "list", "--json"))
        restored = run("trash", "restore", NAME, "--json")
        schemas.validate("post", "/api/v1/trash/restore/{name}", restored)
        assert cli_process(*backend, "delete", NAME).exit_code == 0
        purged = run("trash", "purge", NAME, "--json")
        schemas.validate("delete", "/api/v1/trash/{name}", purged)
        assert schemas.checked | API_ONLY == schemas.json_operations()
