"""Server logs: text on a terminal, JSON lines for machines, a request ID on every line.

``log_format = "json"`` writes one JSON object a line: ``time``, ``level``,
``logger``, ``message``, the ``request_id`` of the request being answered (on
every line logged while answering it, the services' included), and the fields
the access line adds. ``text`` is uvicorn's format; ``auto`` (the default)
picks text when standard error is a terminal and JSON otherwise.

What reaches a log line is chosen, never dumped: the access line names the
method, path, route, state, caller, status and duration, and nothing of the
headers (credentials) or the body (state content).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

__all__ = ["REQUEST_ID", "JsonFormatter", "json_line", "log_config", "resolve_format"]

#: The ID of the request being answered (set by the access middleware).
REQUEST_ID: ContextVar[str | None] = ContextVar("statekeeper_request_id", default=None)


def resolve_format(setting: str) -> str:
    """``text`` or ``json`` for a ``log_format`` setting (``auto`` looks at stderr)."""
    if setting == "auto":
        return "text" if sys.stderr.isatty() else "json"
    return setting


def _time(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def json_line(level: str, logger: str, message: str) -> str:
    """A log line in the JSON format, for what is printed before logging is set up."""
    out = {"time": _time(time.time()), "level": level, "logger": logger, "message": message}
    return json.dumps(out, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={"fields": {...}}`` adds top-level fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            out["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """uvicorn's ``LEVEL:     message``, with the logger's name for statekeeper's own."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"{record.levelname}:".ljust(10)
        name = "" if record.name.startswith(("uvicorn", "statekeeper.access")) else record.name
        line = f"{prefix}{name + ': ' if name else ''}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def log_config(log_format: str, level: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` for uvicorn and statekeeper's loggers.

    uvicorn's own access log is off: statekeeper's access line replaces it.
    """
    formatter = JsonFormatter if resolve_format(log_format) == "json" else TextFormatter
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "statekeeper": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }
