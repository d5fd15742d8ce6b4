"""The log process: ``serve``'s log lines made text and written by a process of its own.

A server answering many clients is bound by its one interpreter lock, not by the
machine's cores: every instruction it runs for a log line is one its requests wait
for. The server's :class:`~statekeeper.telemetry.logs.LineWriter` already holds the
access lines as facts and writes them a batch at a time; with a log process, it
pickles the batch (C code, a fraction of the formatting) and writes it to a pipe,
and this process makes the lines' text and writes them to the server's standard
error, on another core. The lines, their order and their text are the same.

- The process ends when the pipe ends: ``serve`` closing it at its stop (after
  its last batch), or dying, SIGKILL included. It writes what it was sent first.
- It ignores SIGINT and SIGTERM: Ctrl-C, or a service manager's SIGTERM to the
  whole group, reaches it with the server, and the server's last lines are still
  to come.
- If it dies, the server's next batch finds the pipe closed, and the server writes
  its lines itself from then on, saying so first.
"""

from __future__ import annotations

import fcntl
import logging
import pickle
import signal
import struct
import subprocess
import sys
import threading
from typing import IO

from statekeeper.children import own_module
from statekeeper.telemetry.logs import Held, LineWriter, render

__all__ = ["LogProcess", "main", "write_through_process"]

#: The pipe's buffer, in bytes (Linux's default limit for a process without privileges).
_PIPE_SIZE = 1 << 20
#: A batch's frame: its pickle's length, then the pickle.
_LENGTH = struct.Struct("<I")


class LogProcess:
    """``serve``'s end of the pipe to its log process."""

    def __init__(self, json_format: bool, stop_timeout: float = 10.0) -> None:
        self.stop_timeout = stop_timeout
        self.json_format = json_format
        command, env = own_module(__name__, "json" if json_format else "text")
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=sys.stderr.fileno(),  # the server's log, wherever it goes
            env=env,
        )
        self._pipe: IO[bytes] | None = self._proc.stdin
        assert self._pipe is not None
        try:
            # Room for a burst's lines (some 3,000 access lines) while the process waits
            # for a core: a full pipe holds the server's writes up, as a full stderr would.
            fcntl.fcntl(self._pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass  # above the system's limit (fs.pipe-max-size): the default 64 KiB
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def send(self, batch: list[str | Held]) -> bool:
        """Hand ``batch`` over, whole; False when the process is gone."""
        try:
            data = pickle.dumps(batch, pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError):
            # A line of another kind than ours (a handler added by a program embedding
            # the server): made text here, the batch still in order through the pipe.
            made = [x if isinstance(x, str) else render(x, self.json_format) for x in batch]
            data = pickle.dumps(made)
        with self._lock:
            pipe = self._pipe
            if pipe is None:
                return False
            try:
                pipe.write(_LENGTH.pack(len(data)))
                pipe.write(data)
                pipe.flush()
            except (OSError, ValueError):
                self._pipe = None
                return False
        return True

    def close(self) -> None:
        """End the pipe, and wait for the process to write what it was sent."""
        with self._lock:
            pipe, self._pipe = self._pipe, None
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass  # it died with bytes still in the buffer: they are lost either way
        try:
            self._proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def write_through_process(json_format: bool) -> LineWriter | None:
    """Start a log process for the server's log writer (the handler of the
    ``statekeeper`` logger, as ``log_config`` sets it up); the writer, or None when
    logging is set up otherwise."""
    for handler in logging.getLogger("statekeeper").handlers:
        if type(handler) is LineWriter:
            handler.use_process(LogProcess(json_format))
            return handler
    return None


def _read(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def main() -> int:
    """The log process: write each batch's lines until the pipe ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    json_format = sys.argv[1:] == ["json"]
    stdin = open(0, "rb", closefd=False)  # noqa: SIM115 (the process's own stdin)
    out = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    while (head := _read(stdin, _LENGTH.size)) is not None:
        data = _read(stdin, _LENGTH.unpack(head)[0])
        if data is None:
            break  # the server died mid-batch: the part sent cannot be read
        batch: list[str | Held] = pickle.loads(data)
        text = "".join([x if isinstance(x, str) else render(x, json_format) for x in batch])
        try:
            out.write(text)
            out.flush()
        except OSError:
            return 1  # the log is gone: nothing left to write to
    return 0


if __name__ == "__main__":
    sys.exit(main())
