"""A version is named exactly as ``history`` lists it: ``rollback --to " 1"`` (blank space
around the ID) rolled back to version 1, while ``--to 01`` was refused. Both are refused
now, in the same words, by the CLI on the store and through a real server, and so are
``serial:N`` and ``current`` with blank space around them. ``serial:01`` rolled back
to serial 1 where the bare ``01`` was refused: N is written as history prints it, or the
ref is refused (exit 2) whatever the store holds.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.conftest import CliFn, push_serials

NAME = "team/app.tfstate"


def test_a_version_with_blank_space_around_it_names_no_version(
    tmp_path: Path, cli_process: CliFn, where: tuple[str, ...]
) -> None:
    push_serials(cli_process, where, tmp_path, NAME, 1, 2)
    first = json.loads(cli_process(*where, "history", NAME, "--json").stdout)[-1]["version_id"]

    for to in ("01", f" {first}", f"{first} ", f"{first}\t"):
        run = cli_process(*where, "rollback", NAME, "--to", to, "--yes")
        assert run.exit_code == 1, (to, run.stdout, run.stderr)
        assert f"{NAME} has no version {to!r}" in run.stderr, (to, run.stderr)
    for to in (" serial:1", "serial:1 "):
        run = cli_process(*where, "rollback", NAME, "--to", to, "--yes")
        assert run.exit_code in (1, 2), (to, run.stdout, run.stderr)
        assert "Traceback" not in run.stderr
    run = cli_process(*where, "pull", NAME, "--version", " current")
    assert run.exit_code == 1 and "has no version ' current'" in run.stderr, run.stderr
    history = json.loads(cli_process(*where, "history", NAME, "--json").stdout)
    assert len(history) == 2  # nothing was rolled back


def test_serial_n_is_written_as_history_prints_it(
    tmp_path: Path, cli_process: CliFn, where: tuple[str, ...]
) -> None:
    push_serials(cli_process, where, tmp_path, NAME, 1, 2)

    for to in ("serial:01", "serial:001", "serial:+1", "serial:-1", "serial: 1", "serial:1 "):
        run = cli_process(*where, "rollback", NAME, "--to", to, "--yes")
        assert run.exit_code == 2, (to, run.stdout, run.stderr)
        assert f"{to!r} is not serial:N" in run.stderr, (to, run.stderr)
        assert "leading zeros" in run.stderr and "Traceback" not in run.stderr
    history = json.loads(cli_process(*where, "history", NAME, "--json").stdout)
    assert len(history) == 2  # nothing was rolled back
    run = cli_process(*where, "pull", NAME, "--version", "serial:1")
    assert run.exit_code == 0 and json.loads(run.stdout)["serial"] == 1, run.stderr
