"""A request's access line: its facts, held as they are, and their text.

The access middleware (``telemetry/access.py``) takes the facts when it answers a
request; the text is made later, a batch of lines at a time, by the log process
(``telemetry/logprocess.py``) or, without one, by the server's log writer. So the
facts are a tuple of plain values, which a pipe carries cheaply, and this module
imports nothing the log process does not need.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

__all__ = ["AccessLine"]


class AccessLine(NamedTuple):
    """A request's access line as facts, made text when it is written.

    Formatting a line per request, between two requests' store work, costs several
    times what the same code costs run in a row, its instructions and data no longer
    in the caches; and on a server bound by its one interpreter lock, any of its
    work that another process can do leaves the requests more of that lock.
    """

    client: tuple[str, int] | None
    caller: str | None
    method: str
    path: str
    http_version: str
    route: str
    state: str | None
    status: int
    seconds: float
    sent: int
    request_id: str
    #: The request's event as JSON text, as the audit trail stored it.
    event_json: str | None
    #: The event's action and outcome (``write:ok``), for the message.
    event_name: str | None

    def message(self) -> str:
        client, path = self.client, self.path
        if not path.isprintable():
            path = json.dumps(path, ensure_ascii=False)[1:-1]  # no line breaks in a log
        where = f"{client[0]}:{client[1]}" if client else "-"
        message = (
            f'{where} - "{self.method} {path} HTTP/{self.http_version}" {self.status} '
            f"{self.seconds * 1000:.1f}ms caller={self.caller or '-'} request_id={self.request_id}"
        )
        if self.event_name is not None:
            message += " event=" + self.event_name
        return message

    def fields(self) -> dict[str, Any]:
        """The line's own fields; the writer adds the event's (``event``) last."""
        client = self.client
        return {
            "remote_addr": client[0] if client else None,
            "caller": self.caller,
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "state": self.state,
            "status": self.status,
            # Hundredths of a millisecond; round(x, 2) formats the float in decimal to round it.
            "duration_ms": int(self.seconds * 100_000 + 0.5) / 100,
            "response_bytes": self.sent,
        }
