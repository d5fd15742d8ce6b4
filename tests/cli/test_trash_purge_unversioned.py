"""``trash purge`` with no name on a bucket without versioning says it keeps no trash
(exit 1), as ``trash list`` does and docs/operations.md promises; it said "nothing in
the trash has expired", exit 0, as if the trash had been looked at. With
``history.trash = "0s"`` it says that nothing ever expires. A moto server, and the
embedded store.

``prune`` there said the s3 store "cannot remove single versions" and pointed at the
bucket's lifecycle rules, which expire nothing in a bucket without versions (and a
versioned bucket prunes): it says the bucket keeps no history and how to turn it on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli.conftest import CliFn

from statekeeper.testing.processes import MotoServer
from statekeeper.testing.statefiles import state_bytes

BUCKET = "plain-tfstate"


@pytest.mark.aws
def test_purge_on_a_bucket_without_versioning_says_so(moto: MotoServer, cli_process: CliFn) -> None:
    moto.client("s3").create_bucket(Bucket=BUCKET)
    store = ("--store", f"s3://{BUCKET}")
    for command in (("trash", "list"), ("trash", "purge")):
        run = cli_process(*store, *command, env=moto.env())
        assert run.exit_code == 1, (command, run.stdout, run.stderr)
        assert "keeps no deleted states" in run.stderr, (command, run.stderr)


@pytest.mark.aws
def test_prune_on_a_bucket_without_versioning_says_so(moto: MotoServer, cli_process: CliFn) -> None:
    moto.client("s3").create_bucket(Bucket=BUCKET)
    rules = 'retention = [{ states = "**", keep_last = 2 }]'
    run = cli_process(
        "--store", f"s3://{BUCKET}", "prune", env={**moto.env(), "STATEKEEPER_HISTORY": rules}
    )
    assert run.exit_code == 1, (run.stdout, run.stderr)
    assert "keeps no versions to prune" in run.stderr, run.stderr
    assert "put-bucket-versioning" in run.stderr, run.stderr
    assert "lifecycle" not in run.stderr, run.stderr


def test_purge_with_a_trash_kept_until_purged_says_nothing_expires(
    tmp_path: Path, cli_process: CliFn
) -> None:
    state = tmp_path / "app.tfstate"
    state.write_bytes(state_bytes(1))
    assert cli_process("push", "team/app.tfstate", str(state)).exit_code == 0
    run = cli_process("trash", "purge", env={"STATEKEEPER_HISTORY": 'trash = "0s"'})
    assert run.exit_code == 0, run.stderr
    assert "nothing expires: history.trash is 0s" in run.stderr
