"""A filter no event or delivery attempt could meet is refused, not answered with an empty table.

The commands run as the user runs them: ``python -m statekeeper`` as a child
process on the embedded store on disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli.conftest import CliFn

from statekeeper.testing.statefiles import state_bytes


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ("audit", "--action", "nope"),
            "no event has the action 'nope'; choose from read, write, push",
        ),
        (("audit", "--limit", "0"), "the limit is 0; ask for 1 event or more"),
        (
            ("hooks", "deliveries", "--outcome", "nope"),
            "no attempt has the outcome 'nope'; choose from delivered, retry, dead",
        ),
        (("hooks", "deliveries", "--limit", "0"), "--limit"),
    ],
)
def test_a_filter_nothing_could_meet_is_refused(
    cli_process: CliFn, args: tuple[str, ...], said: str
) -> None:
    run = cli_process(*args)
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert said in run.stderr and "Traceback" not in run.stderr
    assert run.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ("audit", "--action", "write", "--limit", "1"),
        ("audit", "--action", "force-unlock"),
        ("hooks", "deliveries", "--outcome", "dead", "--limit", "1"),
    ],
)
def test_a_filter_that_can_be_met_is_answered(
    cli_process: CliFn, tmp_path: Path, args: tuple[str, ...]
) -> None:
    # A command that only reads needs a store: a push makes one (cwd is tmp_path/cwd).
    (tmp_path / "s1.tfstate").write_bytes(state_bytes(1))
    assert cli_process("push", "seed.tfstate", str(tmp_path / "s1.tfstate")).exit_code == 0
    run = cli_process(*args)
    assert run.exit_code == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith("TIME")  # the table's head, no rows yet
