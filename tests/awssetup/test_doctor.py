"""doctor against the moto server: settings, live probes, digests, locks, --fix."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from tests.awssetup.helpers import POLICY_SKIP, Aws, cli, cli_process, statuses

from statekeeper.testing.processes import MotoServer, StatekeeperServer

pytestmark = pytest.mark.aws

# Off unless asked for or in use: "skip".
OPTIONAL = {"bucket.access-logging", "replication.rule", "states.encryption"}


def lock_info(lock_id: str, created: datetime, path: str = "") -> str:
    return json.dumps(
        {
            "ID": lock_id,
            "Operation": "OperationTypeApply",
            "Info": "",
            "Who": "ci@runner",
            "Version": "1.15.0",
            "Created": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "Path": path,
        },
        separators=(",", ":"),
    )


def test_doctor_passes_every_check_after_bootstrap(aws: Aws) -> None:
    assert cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks").exit_code == 0

    settings = cli("doctor", "--bucket", "tf-state", "--table", "tf-locks", "--no-probes", "--json")
    assert settings.exit_code == 0, settings.output
    report = settings.json()
    assert report["ok"] is True
    for check, status in statuses(report).items():
        skipped = OPTIONAL | {"probe.conditional-put"}  # the write probe, off with --no-probes
        assert status == ("skip" if check in skipped else "pass"), (check, status)
    assert "bucket.policy-tls" in statuses(report)
    # --no-probes leaves out the write only: the data checks read, and ran
    for check in ("states.digest", "locks.stale", "locks.dual"):
        assert statuses(report)[check] == "pass", check

    aws.drop_policy("tf-state")
    full = cli("doctor", "--bucket", "tf-state", "--table", "tf-locks", *POLICY_SKIP, "--json")
    assert full.exit_code == 0, full.output
    got = statuses(full.json())
    for check in (
        "probe.conditional-put",
        "probe.versions",
        "states.digest",
        "locks.stale",
        "locks.dual",
    ):
        assert got[check] == "pass", (check, got)
    assert {c for c, s in got.items() if s != "pass"} == OPTIONAL | {
        "bucket.policy-tls",
        "bucket.policy-encrypted-uploads",
    }
    # the probe object and all its versions are gone
    listed = aws.s3.list_object_versions(Bucket="tf-state", Prefix=".statekeeper-doctor/")
    assert listed.get("Versions", []) == [] and listed.get("DeleteMarkers", []) == []

    text = cli("doctor", "--bucket", "tf-state", "--table", "tf-locks", *POLICY_SKIP)
    assert text.exit_code == 0
    assert "PASS   probe.conditional-put" in text.output
    assert "0 failed, 0 warning(s)" in text.output


def test_doctor_reports_a_hand_made_bucket_and_fix_brings_it_to_all_pass(aws: Aws) -> None:
    # A bucket and table made by hand: versioning off, no default encryption (moto applies
    # none, unlike AWS since 2023), no public access block, a stale digest after a hand
    # restore. Ownership and lifecycle are set (AWS's default and a deliberate choice).
    s3, ddb = aws.s3, aws.ddb
    s3.create_bucket(Bucket="hand-made", ObjectOwnership="BucketOwnerEnforced")
    s3.put_bucket_lifecycle_configuration(
        Bucket="hand-made",
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "mine",
                    "Status": "Enabled",
                    "Filter": {},
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 30},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3},
                }
            ]
        },
    )
    # SSE is set at creation: moto ignores SSESpecification in UpdateTable, so doctor's
    # table.encryption fix cannot be observed there.
    ddb.create_table(
        TableName="hand-locks",
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        SSESpecification={"Enabled": True, "SSEType": "KMS"},
    )
    state = b'{"version": 4, "serial": 3, "lineage": "l-1", "outputs": {}, "resources": []}\n'
    s3.put_object(Bucket="hand-made", Key="app/terraform.tfstate", Body=state)
    stale = hashlib.md5(b"the state before the restore").hexdigest()
    ddb.put_item(
        TableName="hand-locks",
        Item={"LockID": {"S": "hand-made/app/terraform.tfstate-md5"}, "Digest": {"S": stale}},
    )

    args = ("doctor", "--bucket", "hand-made", "--table", "hand-locks")
    audit = cli(*args, "--json")
    assert audit.exit_code == 1
    report = audit.json()
    assert report["ok"] is False
    by_check = {(c["check"], c["subject"]): c for c in report["checks"]}
    for check in (
        "bucket.versioning",
        "bucket.encryption",
        "bucket.public-access-block",
        "bucket.policy-tls",
    ):
        assert by_check[(check, "")]["status"] == "fail", check
        assert by_check[(check, "")]["fix"].startswith("statekeeper doctor --fix")
    digest = by_check[("states.digest", "app/terraform.tfstate")]
    assert digest["status"] == "fail"
    current = hashlib.md5(state).hexdigest()
    assert current in digest["summary"] and stale in digest["summary"]
    assert "state data in S3 does not have the expected content" in digest["summary"]
    for check in (
        "table.point-in-time-recovery",
        "table.deletion-protection",
        "bucket.policy-encrypted-uploads",
    ):
        assert by_check[(check, "")]["status"] == "warn", check
    assert by_check[("probe.versions", "")]["status"] == "fail"

    text = cli(*args)
    assert text.exit_code == 1
    assert "FAIL   bucket.versioning" in text.output
    assert "fix: statekeeper doctor --fix (it will enable versioning)" in text.output

    # --fix; the bucket policy is left out here because moto would then refuse the probes.
    fixed = cli(*args, "--fix", *POLICY_SKIP, "--json")
    assert fixed.exit_code == 0, fixed.output
    changed = {c["check"] for c in fixed.json()["checks"] if c["changed"]}
    assert changed >= {
        "bucket.versioning",
        "bucket.encryption",
        "bucket.public-access-block",
        "table.point-in-time-recovery",
        "table.deletion-protection",
        "states.digest",
    }
    after = cli(*args, *POLICY_SKIP, "--json")
    assert after.exit_code == 0, after.output
    for check, status in statuses(after.json()).items():
        if check in OPTIONAL or check.startswith("bucket.policy-"):
            assert status == "skip", (check, status)
        else:
            assert status == "pass", (check, status)
    item = ddb.get_item(
        TableName="hand-locks", Key={"LockID": {"S": "hand-made/app/terraform.tfstate-md5"}}
    )["Item"]
    assert item["Digest"]["S"] == current
    assert s3.get_bucket_versioning(Bucket="hand-made")["Status"] == "Enabled"
    # the operator's own lifecycle rule (30 days) is accepted and left alone
    assert [
        r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket="hand-made")["Rules"]
    ] == ["mine"]


def test_fix_applies_only_safe_policy_changes(aws: Aws) -> None:
    aws.s3.create_bucket(Bucket="hand-made")
    result = cli("doctor", "--bucket", "hand-made", "--fix", "--no-probes", "--json")
    got = statuses(result.json())
    # denying plain HTTP cannot break an AWS client; denying uploads without the SSE
    # header breaks every backend without `encrypt = true`, so that stays a warning
    assert got["bucket.policy-tls"] == "pass"
    assert got["bucket.policy-encrypted-uploads"] == "warn"
    assert got["bucket.ownership"] == "warn"  # `acl = …` backends would break: not safe
    assert got["bucket.lifecycle"] == "warn"  # expiring versions deletes history: not safe
    sids = [s["Sid"] for s in aws.policy("hand-made")["Statement"]]
    assert sids == ["StatekeeperDenyInsecureTransport"]
    assert result.exit_code == 0  # warnings alone do not fail


def test_missing_bucket_fails_without_crashing(aws: Aws) -> None:
    result = cli("doctor", "--bucket", "no-such-bucket", "--json")
    assert result.exit_code == 1
    got = statuses(result.json())
    assert got["bucket.exists"] == "fail"
    assert got["bucket.versioning"] == "skip"
    assert not any(check.startswith("probe.") for check in got)


def test_stale_locks_and_dual_lock_drift_are_reported_never_removed(aws: Aws) -> None:
    assert cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks").exit_code == 0
    aws.drop_policy("tf-state")
    s3, ddb = aws.s3, aws.ddb
    old = datetime.now(UTC) - timedelta(hours=5)
    fresh = datetime.now(UTC) - timedelta(minutes=1)
    body = b'{"version": 4, "serial": 1, "lineage": "x", "outputs": {}, "resources": []}'
    digest = hashlib.md5(body).hexdigest()

    def state(key: str) -> None:
        s3.put_object(Bucket="tf-state", Key=key, Body=body, ServerSideEncryption="AES256")
        ddb.put_item(
            TableName="tf-locks",
            Item={"LockID": {"S": f"tf-state/{key}-md5"}, "Digest": {"S": digest}},
        )

    # a: old lock file, no DynamoDB lock, although DynamoDB is in use (digest item)
    state("a.tfstate")
    s3.put_object(
        Bucket="tf-state",
        Key="a.tfstate.tflock",
        Body=lock_info("id-a", old).encode(),
        ServerSideEncryption="AES256",
    )
    # b: lock file and DynamoDB lock with different IDs
    state("b.tfstate")
    s3.put_object(
        Bucket="tf-state",
        Key="b.tfstate.tflock",
        Body=lock_info("id-b1", fresh).encode(),
        ServerSideEncryption="AES256",
    )
    ddb.put_item(
        TableName="tf-locks",
        Item={"LockID": {"S": "tf-state/b.tfstate"}, "Info": {"S": lock_info("id-b2", fresh)}},
    )
    # c: a fresh DynamoDB lock and lock-file history (a released lock file): drift
    state("c.tfstate")
    s3.put_object(
        Bucket="tf-state", Key="c.tfstate.tflock", Body=b"{}", ServerSideEncryption="AES256"
    )
    s3.delete_object(Bucket="tf-state", Key="c.tfstate.tflock")
    ddb.put_item(
        TableName="tf-locks",
        Item={"LockID": {"S": "tf-state/c.tfstate"}, "Info": {"S": lock_info("id-c", fresh)}},
    )
    # d: DynamoDB only, never a lock file: that is just the configuration, not drift
    state("d.tfstate")
    ddb.put_item(
        TableName="tf-locks",
        Item={"LockID": {"S": "tf-state/d.tfstate"}, "Info": {"S": lock_info("id-d", old)}},
    )

    args = ("doctor", "--bucket", "tf-state", "--table", "tf-locks", *POLICY_SKIP)
    result = cli(*args, "--stale-after", "2h", "--fix", "--json")
    got = statuses(result.json())
    assert got["locks.stale[a.tfstate.tflock]"] == "warn"
    assert got["locks.stale[tf-state/d.tfstate (DynamoDB)]"] == "warn"
    assert "locks.stale[b.tfstate.tflock]" not in got
    assert got["locks.dual[a.tfstate]"] == "warn"
    assert got["locks.dual[b.tfstate]"] == "fail"
    assert got["locks.dual[c.tfstate]"] == "warn"
    assert "locks.dual[d.tfstate]" not in got
    assert got["states.digest"] == "pass"
    assert result.exit_code == 1
    stale = next(c for c in result.json()["checks"] if c["subject"] == "a.tfstate.tflock")
    assert "terraform force-unlock id-a" in stale["fix"]
    assert "ci@runner" in stale["summary"]

    # --fix removed nothing
    assert s3.get_object(Bucket="tf-state", Key="a.tfstate.tflock")["Body"].read()
    for key in ("b.tfstate", "c.tfstate", "d.tfstate"):
        assert "Item" in ddb.get_item(
            TableName="tf-locks", Key={"LockID": {"S": f"tf-state/{key}"}}
        )

    # a longer threshold: nothing is stale
    relaxed = statuses(cli(*args, "--stale-after", "1d", "--json").json())
    assert relaxed["locks.stale"] == "pass"


def test_missing_digest_is_a_warning_and_fix_writes_it(aws: Aws) -> None:
    assert cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks").exit_code == 0
    aws.drop_policy("tf-state")
    body = b'{"version": 4}'
    aws.s3.put_object(
        Bucket="tf-state", Key="x/terraform.tfstate", Body=body, ServerSideEncryption="AES256"
    )
    args = ("doctor", "--bucket", "tf-state", "--table", "tf-locks", *POLICY_SKIP, "--json")
    first = cli(*args)
    assert first.exit_code == 0  # a warning, not a failure
    assert statuses(first.json())["states.digest[x/terraform.tfstate]"] == "warn"
    cli(*args, "--fix")
    item = aws.ddb.get_item(
        TableName="tf-locks", Key={"LockID": {"S": "tf-state/x/terraform.tfstate-md5"}}
    )["Item"]
    assert item["Digest"]["S"] == hashlib.md5(body).hexdigest()
    assert statuses(cli(*args).json())["states.digest"] == "pass"

    # a digest that is not an MD5: Terraform skips its check; doctor warns and --fix rewrites
    aws.ddb.put_item(
        TableName="tf-locks",
        Item={"LockID": {"S": "tf-state/x/terraform.tfstate-md5"}, "Digest": {"S": "junk"}},
    )
    assert statuses(cli(*args).json())["states.digest[x/terraform.tfstate]"] == "warn"
    cli(*args, "--fix")
    assert statuses(cli(*args).json())["states.digest"] == "pass"


def test_digest_without_state_object_fails(aws: Aws) -> None:
    assert cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks").exit_code == 0
    aws.ddb.put_item(
        TableName="tf-locks",
        Item={"LockID": {"S": "tf-state/gone.tfstate-md5"}, "Digest": {"S": "0" * 32}},
    )
    result = cli(
        "doctor", "--bucket", "tf-state", "--table", "tf-locks", "--skip", "probe.*", "--json"
    )
    assert result.exit_code == 1
    finding = next(c for c in result.json()["checks"] if c["subject"] == "gone.tfstate")
    assert finding["status"] == "fail"
    assert "tf-state/gone.tfstate-md5" in finding["fix"]


def test_bad_stale_after_is_a_clear_error(aws: Aws) -> None:
    result = cli_process("doctor", "--bucket", "tf-state", "--stale-after", "soon")
    assert result.returncode == 2
    assert "'soon' is not a duration" in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_audits_the_replica_its_replication_rule_names(aws: Aws) -> None:
    args = ("--bucket", "tf-state", "--table", "tf-locks")
    assert cli("bootstrap", *args, "--replica-region", "us-west-2").exit_code == 0
    report = cli("doctor", *args, "--no-probes", "--json")
    assert report.exit_code == 0, report.output
    got = statuses(report.json())
    for check in (
        "replica.exists",
        "replica.versioning",
        "replica.encryption",
        "replica.policy-tls",
        "replication.role",
        "replication.rule",
    ):
        assert got[check] == "pass", (check, got)

    west = Aws("us-west-2")
    west.s3.put_bucket_versioning(
        Bucket="tf-state-replica", VersioningConfiguration={"Status": "Suspended"}
    )
    broken = cli("doctor", *args, "--no-probes", "--json")
    assert broken.exit_code == 1
    assert statuses(broken.json())["replica.versioning"] == "fail"
    fixed = cli("doctor", *args, "--no-probes", "--fix", "--json")
    assert fixed.exit_code == 0, fixed.output
    assert west.s3.get_bucket_versioning(Bucket="tf-state-replica")["Status"] == "Enabled"


def test_doctor_names_plaintext_states_once_encryption_is_in_use(aws: Aws) -> None:
    import base64
    import os

    from statekeeper.app import Services
    from statekeeper.security.caller import Caller
    from statekeeper.settings import load_settings
    from statekeeper.terraform.names import StateName

    assert cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks").exit_code == 0
    aws.drop_policy("tf-state")
    args = ("doctor", "--bucket", "tf-state", "--table", "tf-locks", *POLICY_SKIP, "--json")
    # A state Terraform's backend "s3" wrote: plaintext, and encryption is not in use yet.
    plain = b'{"version": 4, "serial": 1, "lineage": "L", "outputs": {}, "resources": []}'
    aws.s3.put_object(
        Bucket="tf-state", Key="old/terraform.tfstate", Body=plain, ServerSideEncryption="AES256"
    )
    assert statuses(cli(*args).json())["states.encryption"] == "skip"
    # A state written through statekeeper with a master key: encrypted at rest.
    key = base64.b64encode(os.urandom(32)).decode()
    services = Services.build(
        load_settings(
            {
                "store": "s3://tf-state?sse=AES256",
                "locks": "dynamodb://tf-locks",
                "master_key": key,
            },
            env={},
        )
    )
    try:
        services.states.write(StateName("new/terraform.tfstate"), plain, Caller("ci"))
    finally:
        services.close()
    report = statuses(cli(*args).json())
    assert report["states.encryption[old/terraform.tfstate]"] == "warn"
    assert "states.encryption[new/terraform.tfstate]" not in report


def _bad_digest_and_old_lock(aws: Aws) -> tuple[str, ...]:
    """A bootstrapped bucket with a digest item whose state is gone and a lock held
    since January (Terraform's own backend wrote both); doctor's arguments for it."""
    assert cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks").exit_code == 0
    aws.ddb.put_item(
        TableName="tf-locks",
        Item={"LockID": {"S": "tf-state/team/x.tfstate-md5"}, "Digest": {"S": "0" * 32}},
    )
    old = datetime(2026, 1, 1, tzinfo=UTC)
    aws.ddb.put_item(
        TableName="tf-locks",
        Item={"LockID": {"S": "tf-state/team/x.tfstate"}, "Info": {"S": lock_info("old", old)}},
    )
    return ("doctor", "--bucket", "tf-state", "--table", "tf-locks", "--json")


def test_no_probes_skips_only_the_write_probe(aws: Aws) -> None:
    args = _bad_digest_and_old_lock(aws)
    result = cli(*args, "--no-probes")
    got = statuses(result.json())
    assert got["states.digest[team/x.tfstate]"] == "fail"
    assert got["locks.stale[tf-state/team/x.tfstate (DynamoDB)]"] == "warn"
    assert got["probe.conditional-put"] == "skip"
    assert "probe.versions" not in got
    assert result.exit_code == 1
    # nothing was written: no probe object ever existed
    listed = aws.s3.list_object_versions(Bucket="tf-state", Prefix=".statekeeper-doctor/")
    assert listed.get("Versions", []) == [] and listed.get("DeleteMarkers", []) == []


def test_skipping_the_bucket_checks_keeps_the_data_checks(aws: Aws) -> None:
    args = _bad_digest_and_old_lock(aws)
    result = cli(*args, "--skip", "bucket.*")
    got = statuses(result.json())
    assert got["bucket.exists"] == "skip"
    assert got["states.digest[team/x.tfstate]"] == "fail"
    assert result.exit_code == 1

    # a missing bucket, its check skipped: the skipped line says the data was not checked
    missing = cli(
        "doctor",
        "--bucket",
        "no-such-bucket",
        "--skip",
        "bucket.*",
        "--skip",
        "replication.*",
        "--json",
    )
    exists = next(c for c in missing.json()["checks"] if c["check"] == "bucket.exists")
    assert exists["status"] == "skip"
    assert "does not exist" in exists["summary"]
    assert "data checks" in exists["summary"] and "did not run" in exists["summary"]


def test_stale_locks_are_aged_by_the_server_and_shared_holds_named_by_state(
    aws: Aws, serve: Callable[..., StatekeeperServer], moto: MotoServer
) -> None:
    assert cli("bootstrap", "--bucket", "tf-state", "--table", "tf-locks").exit_code == 0
    aws.drop_policy("tf-state")
    server = serve("--store", "s3://tf-state", "--locks", "dynamodb://tf-locks", env=moto.env())
    # Three plans share one lock (the default lock policy); each client's clock says January.
    january = datetime(2026, 1, 1, tzinfo=UTC)
    with httpx.Client(timeout=60) as client:
        for n in (1, 2, 3):
            body = lock_info(f"plan-{n}", january).replace(
                "OperationTypeApply", "OperationTypePlan"
            )
            taken = client.request("LOCK", server.state_url("sh.tfstate"), content=body)
            assert taken.status_code == 200, taken.text
    args = ("doctor", "--bucket", "tf-state", "--table", "tf-locks", *POLICY_SKIP, "--json")
    # Taken seconds ago by the server's clock: not stale, whatever Created says.
    assert statuses(cli(*args).json())["locks.stale"] == "pass"

    checks = cli(*args, "--stale-after", "0s").json()["checks"]
    stale = [c for c in checks if c["check"] == "locks.stale"]
    assert len(stale) == 3
    for c in stale:
        assert "48w" not in c["summary"]  # not January's age
        assert "sh.tfstate" in c["subject"] and "!shared" not in c["subject"]
        lock_id = c["summary"].split("ID ")[1].split(")")[0]
        assert f"unlock sh.tfstate --id {lock_id}" in c["fix"]
        assert "terraform force-unlock" not in c["fix"]
    beside = [c for c in stale if "shared hold" in c["subject"]]
    assert len(beside) == 2
    # the fix works: statekeeper unlock removes a hold beside the lock
    hold = beside[0]["fix"].split("statekeeper ")[1].split(" (doctor")[0].split()
    assert cli_process(*hold).returncode == 0
    assert (
        len(
            [
                c
                for c in cli(*args, "--stale-after", "0s").json()["checks"]
                if c["check"] == "locks.stale"
            ]
        )
        == 2
    )
