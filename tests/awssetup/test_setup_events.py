"""bootstrap and doctor --fix change AWS resources: each run that may change them records
one event in the configured store's audit trail naming what it changed; a dry run and a
doctor without --fix change nothing and record nothing."""

from __future__ import annotations

import os

import pytest
from tests.awssetup.helpers import Aws, cli, cli_process

from statekeeper.app import Services
from statekeeper.events import Action, Event
from statekeeper.security.audit import AuditFilter
from statekeeper.settings import load_settings

pytestmark = pytest.mark.aws


def _trail() -> list[Event]:
    """The events of the store the ``aws`` fixture configured (STATEKEEPER_STORE)."""
    services = Services.build(load_settings({"store": os.environ["STATEKEEPER_STORE"]}, env={}))
    try:
        return [
            e
            for e in services.audit.query(AuditFilter())
            if e.action in (Action.BOOTSTRAP, Action.DOCTOR_FIX)
        ]
    finally:
        services.close()


def test_bootstrap_records_what_it_changed(aws: Aws) -> None:
    args = ("bootstrap", "--bucket", "tf-state", "--table", "tf-locks", "--json")
    assert cli(*args, "--dry-run").exit_code == 0
    assert _trail() == []  # a plan changes nothing
    assert cli(*args).exit_code == 0
    (event,) = _trail()
    assert (event.action, event.outcome, event.state) == (Action.BOOTSTRAP, "ok", None)
    assert "@" in event.actor  # user@host, as Terraform fills Who
    assert event.detail is not None
    assert event.detail.startswith("bucket tf-state, table tf-locks, in us-east-1: changed ")
    assert "bucket.versioning" in event.detail and "table.exists" in event.detail

    assert cli(*args).exit_code == 0  # idempotent: nothing to change, and it says so
    again = _trail()[-1]
    assert again.detail == (
        "bucket tf-state, table tf-locks, in us-east-1: changed nothing (already in line)"
    )


def test_doctor_fix_records_its_fixes_and_an_audit_records_nothing(aws: Aws) -> None:
    aws.s3.create_bucket(Bucket="hand-made")
    args = ("doctor", "--bucket", "hand-made", "--no-probes", "--json")
    assert cli(*args).exit_code == 1  # versioning is off: a failure, reported
    assert _trail() == []
    # The bucket policy is left out: moto would then refuse every request.
    fixed = cli(*args, "--fix", "--skip", "bucket.policy-*")
    assert fixed.exit_code == 0, fixed.output
    (event,) = _trail()
    assert (event.action, event.outcome) == (Action.DOCTOR_FIX, "ok")
    assert event.detail is not None and "bucket.versioning" in event.detail
    assert aws.s3.get_bucket_versioning(Bucket="hand-made")["Status"] == "Enabled"


def test_without_a_store_the_operator_is_told_in_one_line(
    aws: Aws, monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]
) -> None:
    monkeypatch.delenv("STATEKEEPER_STORE")
    monkeypatch.chdir(tmp_path)
    done = cli_process("bootstrap", "--bucket", "tf-state", "--lockfile")
    assert done.returncode == 0, done.stderr
    # One line, whole (not broken where the terminal width falls), and no event dumped.
    assert (
        "warning: no store was given, so these changes are in no audit trail; give --store "
        "(the servers' store) to record them there\n"
    ) in done.stderr
    assert "audit event not stored" not in done.stderr and "'action'" not in done.stderr
    assert not os.path.exists(".statekeeper"), "no stray embedded store"
