"""The [lock_policy] table: which rule decides for a state, leases by operation, and
clear errors for what cannot be read."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from statekeeper.errors import ConfigError
from statekeeper.settings import load_settings
from statekeeper.state.lockpolicy import LockMode, LockPolicy

CONFIG = """
data_dir = "d"

[lock_policy]
ttl = { plan = "1h", "*" = "1d" }

[[lock_policy.rules]]
states = ["prod/**", "*/prod.tfstate"]
mode = "exclusive"
ttl = { plan = "15m", apply = "none" }

[[lock_policy.rules]]
states = "prod/legacy/**"
mode = "shared-plans"
"""


def test_the_first_rule_naming_a_state_decides_and_leases_merge(tmp_path: Path) -> None:
    path = tmp_path / "statekeeper.toml"
    path.write_text(CONFIG)
    policy = load_settings(config_file=path, env={}).lock_policy
    assert policy is not None and policy.has_leases

    team = policy.for_state("team/app.tfstate")
    assert team.mode is LockMode.SHARED_PLANS  # the default
    assert team.lease("OperationTypePlan") == timedelta(hours=1)
    assert team.lease("OperationTypeApply") == timedelta(days=1)  # "*"
    prod = policy.for_state("prod/legacy/app.tfstate")  # the first rule names it first
    assert prod.mode is LockMode.EXCLUSIVE and "prod/**" in prod.source
    assert prod.lease("OperationTypePlan") == timedelta(minutes=15)
    assert prod.lease("OperationTypeApply") is None  # "none" turns it off
    assert prod.lease("OperationTypeRefresh") == timedelta(days=1)
    assert policy.for_state("web/prod.tfstate").mode is LockMode.EXCLUSIVE


def test_the_environment_carries_the_table_as_toml_text() -> None:
    env = {"STATEKEEPER_LOCK_POLICY": 'mode = "exclusive"\nsweep = "0"'}
    policy = load_settings(env=env).lock_policy
    assert policy is not None
    assert (policy.mode, policy.sweep, policy.has_leases) == (LockMode.EXCLUSIVE, 0.0, False)
    assert LockPolicy().mode is LockMode.SHARED_PLANS


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"mode": "shared"}, "is not a lock mode; use 'exclusive' or 'shared-plans'"),
        ({"modes": "exclusive"}, "unknown key(s) modes"),
        ({"ttl": {"plan": "an hour"}}, "is not a duration"),
        ({"ttl": "1h"}, "ttl is a table of durations by operation"),
        ({"rules": [{"mode": "exclusive"}]}, "states is a list of state globs"),
        ({"rules": [{"states": ["a/**b"]}]}, "uses '**' inside a segment"),
        ({"rules": {"states": ["a/**"]}}, "rules is a list of tables"),
    ],
)
def test_what_cannot_be_read_is_a_config_error_naming_it(table: object, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        LockPolicy.parse(table)
    assert says in refused.value.message
    assert refused.value.message.startswith("lock_policy")
