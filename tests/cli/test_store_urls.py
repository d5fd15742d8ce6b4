"""Store and lock URLs as the operator gives them: only schemes that keep what they hold."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import CliFn

from statekeeper.testing.statefiles import state_bytes

NAME = "app.tfstate"


def _state(cwd: Path, serial: int) -> str:
    path = cwd / f"s{serial}.tfstate"
    path.write_bytes(state_bytes(serial))
    return str(path)


def test_memory_is_no_store_or_lock_url_a_user_can_give(cli_process: CliFn, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"  # the fixture runs the CLI there
    s1, s2 = _state(cwd, 1), _state(cwd, 2)
    assert cli_process("push", NAME, s1).exit_code == 0
    (cwd / "memory.toml").write_text('store = "memory://"\n')
    refused = [
        cli_process("--store", "memory://", "push", "a.tfstate", s1),
        cli_process("push", "a.tfstate", s1, env={"STATEKEEPER_STORE": "memory://x"}),
        cli_process("--config", "memory.toml", "push", "a.tfstate", s1),
        # A lock table of this process alone would let a push past the store's own lock.
        cli_process("--locks", "memory://", "push", NAME, s2),
        cli_process("migrate", "--from", s1, "--name", "a.tfstate", "--to", "memory://"),
        cli_process("migrate", "--from", "memory://", "--to", "sqlite:///copy.db"),
    ]
    for r in refused:
        assert r.exit_code == 2, r.stdout + r.stderr
        assert "'memory'" in r.stderr and "known schemes" in r.stderr
        assert "Traceback" not in r.stderr
    assert "sqlite" in refused[0].stderr and "dynamodb" in refused[3].stderr
    pulled = cli_process("pull", NAME)
    assert pulled.stdout_bytes == Path(s1).read_bytes()


def test_a_command_that_only_reads_never_makes_a_store(cli_process: CliFn, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    s1 = _state(cwd, 1)
    missing_dir = tmp_path / "nowhere" / "data"
    runs = {
        "typo.db": cli_process("--store", "sqlite:///typo.db", "pull", NAME),
        str(missing_dir / "statekeeper.db"): cli_process("--data-dir", str(missing_dir), "states"),
        ".statekeeper/statekeeper.db": cli_process("locks"),
        "nonexist.db": cli_process(
            "migrate", "--from", "sqlite:///nonexist.db", "--to", "sqlite:///copy.db"
        ),
    }
    for path, r in runs.items():
        message = " ".join(r.stderr.split())
        assert r.exit_code == 2, (path, r.stdout, message)
        assert f"there is no store at {path}" in message
        assert "Traceback" not in message
    assert "--data-dir" in " ".join(runs["typo.db"].stderr.split())
    assert "a source is only read" in " ".join(runs["nonexist.db"].stderr.split())
    assert not {p.name for p in cwd.iterdir()} & {"typo.db", "nonexist.db", "copy.db"}
    assert not (tmp_path / "nowhere").exists() and not (cwd / ".statekeeper").exists()

    # A command that writes starts a store; then a lock table named apart must exist too.
    assert cli_process("push", NAME, s1).exit_code == 0
    assert cli_process("states").exit_code == 0
    other = cli_process("--locks", "sqlite:///other.db", "locks")
    assert other.exit_code == 2 and "there is no store at other.db" in other.stderr
    assert not (cwd / "other.db").exists()
