"""Logging, configured in one place at start-up: ``configure(settings)``.

Every ``orgwarden.*`` logger writes through one handler on standard error, as text
(``time level logger: message``) or, with ``log_format = "json"``, as one JSON object per line with
``time``, ``level``, ``logger``, ``message`` (and ``exc_info`` when there is a traceback). An access
line (logger ``orgwarden.access``, see ``access.py``) adds its fields as keys of that object.

Records are handed to a bounded queue and formatted and written by a thread of their own
(``logging.handlers.QueueListener``), so a request never waits on standard error (a slow pipe or
journal); when the queue is full a record is dropped and counted (``dropped``) rather than block.
``configure`` may run more than once in a process (the CLI, then the app factory in each worker):
it replaces what it installed before, so lines are never written twice.
"""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any, Final

from orgwarden.config import Settings

ROOT: Final = "orgwarden"
ACCESS: Final = "orgwarden.access"
# An access record carries its fields in this attribute (``logging``'s ``extra``).
FIELDS: Final = "access_fields"
_TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUEUE_SIZE: Final = 10_000


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


class _Handoff(QueueHandler):
    """Hands records to the writing thread as they are: formatting is that thread's work too."""

    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record  # (the base class formats here, on the caller's thread)

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1  # standard error cannot keep up: lose a line, never wait for it


_installed: list[tuple[_Handoff, QueueListener]] = []


def configure(settings: Settings) -> None:
    """Send every ``orgwarden.*`` log line to standard error in ``settings.log_format``, at
    ``settings.log_level``; the access log on or off with ``settings.access_log``."""
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(_TEXT))
    records: queue.Queue[logging.LogRecord] = queue.Queue(QUEUE_SIZE)
    handoff = _Handoff(records)
    listener = QueueListener(records, writer)
    root = logging.getLogger(ROOT)
    shutdown()
    root.addHandler(handoff)
    listener.start()
    _installed.append((handoff, listener))
    root.setLevel(settings.log_level.upper())
    root.propagate = False  # not twice through a handler someone put on the root logger
    access = logging.getLogger(ACCESS)
    # Its own level: the access log is on or off whatever log_level says (it writes at INFO).
    access.setLevel(logging.INFO if settings.access_log else logging.CRITICAL + 1)


def dropped() -> int:
    """Log records dropped because the writing thread could not keep up (since ``configure``)."""
    return sum(handoff.dropped for handoff, _ in _installed)


def shutdown() -> None:
    """Write what is queued and stop the writing thread (also run at exit)."""
    root = logging.getLogger(ROOT)
    while _installed:
        handoff, listener = _installed.pop()
        root.removeHandler(handoff)
        listener.stop()


atexit.register(shutdown)
