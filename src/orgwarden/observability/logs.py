"""Logging, configured in one place at start-up: ``configure(settings)``.

Every ``orgwarden.*`` logger writes through one handler on standard error, as text
(``time level logger: message``) or, with ``log_format = "json"``, as one JSON object per line with
``time``, ``level``, ``logger``, ``message`` (and ``exc_info`` when there is a traceback). An access
line (logger ``orgwarden.access``, see ``access.py``) adds its fields as keys of that object.

``configure`` may run more than once in a process (the CLI, then the app factory in each worker):
it replaces the handler it installed before, so lines are never written twice.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final

from orgwarden.config import Settings

ROOT: Final = "orgwarden"
ACCESS: Final = "orgwarden.access"
# An access record carries its fields in this attribute (``logging``'s ``extra``).
FIELDS: Final = "access_fields"
_TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; an access record's fields become keys of it."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``configure`` installs (told apart from others so a second call replaces it)."""


def configure(settings: Settings) -> None:
    """Send every ``orgwarden.*`` log line to standard error in ``settings.log_format``, at
    ``settings.log_level``; the access log on or off with ``settings.access_log``."""
    handler = _Handler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    root = logging.getLogger(ROOT)
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    root.propagate = False  # not twice through a handler someone put on the root logger
    access = logging.getLogger(ACCESS)
    # Its own level: the access log is on or off whatever log_level says (it writes at INFO).
    access.setLevel(logging.INFO if settings.access_log else logging.CRITICAL + 1)
