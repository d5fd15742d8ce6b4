"""A large state body checked in a child process, while the server receives it.

Python's ``json`` scanner holds the GIL: on the server's own threads the check
of a 100 MB body (about a third of a second of CPU) and the event loop that
receives the body take turns, and the push costs the sum of both. A large body
is therefore checked by :class:`~statekeeper.terraform.statestream.StateDocReader`
in a child process of its own: the server writes the bytes to the child's pipe
(a write releases the GIL) and reads the verdict once the body is complete.
The verdict is the reader's own, from the same code: the document's top-level
members, or the message of the :class:`~statekeeper.errors.InvalidState` it raised.

The child gets no environment (no credential reaches it) and the parent's
import path on its command line. A child that cannot be started leaves the
check to the caller (:func:`start` returns None); one that dies part way is a
:class:`~statekeeper.errors.StorageError` (503: nothing was written, retry).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import IO, Any

from statekeeper.errors import InvalidState, StorageError
from statekeeper.terraform.statedoc import ARRAY, OBJECT, Nested, StateDoc

__all__ = ["ChildReader", "main", "start"]

#: Bytes read from the pipe at a time, in the child.
PIECE = 1 << 20
#: The pipe's capacity asked for: a piece written in one go (Linux; 64 KiB otherwise).
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031

_BOOT = (
    "import sys; sys.path[:0] = sys.argv[1:]; "
    "from statekeeper.terraform.statecheck import main; main()"
)


class ChildReader:
    """:meth:`feed` the body, then :meth:`finish` for its StateDoc (or InvalidState)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None  # both are pipes
        self._stdin: IO[bytes] = proc.stdin
        self._stdout: IO[bytes] = proc.stdout
        # Set when the child stopped reading: it died, and finish() says so.
        self._broken = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the body (blocks while the child is behind)."""
        if self._broken:
            return
        try:
            self._stdin.write(chunk)
        except OSError:
            self._broken = True

    def finish(self) -> StateDoc:
        """The body is complete: the child's verdict."""
        try:
            self._stdin.close()
        except OSError:
            self._broken = True
        verdict = self._stdout.read()
        code = self._proc.wait()
        if code != 0 or verdict[:1] not in (b"A", b"R"):
            raise StorageError(
                f"the check of the state body stopped (its process ended with {code}); "
                "nothing was written: retry the write"
            )
        text = verdict[1:].decode()
        if verdict[:1] == b"R":
            raise InvalidState(text)
        return StateDoc.from_members([(k, _nested(v)) for k, v in json.loads(text)])

    def close(self) -> None:
        """End the child (after finish(), it has ended already)."""
        if self._proc.poll() is None:
            self._proc.kill()
        for pipe in (self._stdin, self._stdout):
            try:
                pipe.close()
            except OSError:
                pass
        self._proc.wait()


def start() -> ChildReader | None:
    """A child checking a body, or None when no process can be started now."""
    try:
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _BOOT, *[p for p in sys.path if p]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={},
            close_fds=True,
        )
    except OSError:
        return None
    assert proc.stdin is not None  # a pipe
    try:
        import fcntl

        fcntl.fcntl(proc.stdin.fileno(), _F_SETPIPE_SZ, _PIPE_SIZE)
    except (ImportError, OSError):
        pass  # the default capacity: more, smaller writes
    return ChildReader(proc)


def _nested(value: Any) -> Any:
    """A member's value as the reader had it (containers are placeholders)."""
    if isinstance(value, list):
        return ARRAY if value == [ARRAY.kind] else OBJECT
    return value


def _plain(value: Any) -> Any:
    return [value.kind] if isinstance(value, Nested) else value


def main() -> None:
    """The child: read the body from stdin, write the verdict to stdout.

    ``A`` and the top-level members as JSON (a container as ``[kind]``; JSON
    keeps every string, a lone surrogate included), or ``R`` and the message.
    A refused body is still read to its end, so the parent never blocks.
    """
    from statekeeper.terraform.statestream import StateDocReader

    reader = StateDocReader()
    refused: InvalidState | None = None
    while chunk := os.read(0, PIECE):
        if refused is None:
            try:
                reader.feed(chunk)
            except InvalidState as exc:
                refused = exc
    if refused is None:
        try:
            reader.finish()
        except InvalidState as exc:
            refused = exc
    if refused is not None:
        out = b"R" + refused.message.encode()
    else:
        members = [[k, _plain(v)] for k, v in reader.members]
        out = b"A" + json.dumps(members).encode()
    sys.stdout.buffer.write(out)
    sys.stdout.buffer.flush()
