"""Logging, configured in one place at start-up: ``configure(settings)``.

Every ``orgwarden.*`` logger writes through one handler on standard error, as text
(``time level logger: message``) or, with ``log_format = "json"``, as one JSON object per line with
``time``, ``level``, ``logger``, ``message`` (and ``exc_info`` when there is a traceback). An access
line (logger ``orgwarden.access``, see ``access.py``) adds its fields as keys of that object.

Access lines (loggers ``orgwarden.access*``, one per request) are kept in a bounded buffer and
formatted and written in batches by a thread of their own, every ``FLUSH_INTERVAL`` seconds (sooner
when ``WAKE_AT`` wait): a request never waits on standard error (a slow pipe or journal) for its
access line, and nothing is handed between threads per line (a queue's wake-up per line cost more
than the rest of a proxied request; bench/RESULTS.md). When the buffer is full a line is dropped and
counted (``dropped``) rather than block. Every other line (start-up, warnings, errors: rare) is
written at once by the thread that logs it, so it is there to read as soon as the event it reports;
an access line may therefore appear up to ``FLUSH_INTERVAL`` after lines logged later. Records carry no
process or thread names (``logging.logProcesses`` and the like are off: none of the formats shows
them, and reading the pid is a system call per record).
``configure`` may run more than once in a process (the CLI, then the app factory in each worker):
it replaces what it installed before, so lines are never written twice.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import orjson

from orgwarden.config import Settings

ROOT: Final = "orgwarden"
ACCESS: Final = "orgwarden.access"
# An access record carries its fields in this attribute (``logging``'s ``extra``).
FIELDS: Final = "access_fields"
_TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUEUE_SIZE: Final = 10_000
FLUSH_INTERVAL: Final = 0.1
WAKE_AT: Final = 2_000


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _dumps(line: dict[str, Any]) -> str:
    return orjson.dumps(line, default=str).decode()


class JsonFormatter(logging.Formatter):
    """One JSON object per record; an access record's fields become keys of it."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return _dumps(line)


class AccessLines:
    """Access lines made straight from their fields, as ``logging.Formatter(_TEXT)`` or
    ``JsonFormatter`` would make them from a record, without the record: making a ``LogRecord`` and
    formatting it through ``logging`` cost 10-20 us a line, several times the rest of the line
    (bench/RESULTS.md). The time's text is made once per second."""

    __slots__ = ("_message", "_names", "_prefix", "_second", "json")

    def __init__(self, json_format: bool) -> None:
        from orgwarden.observability.access import FIELD_NAMES, text_message  # (access imports this module)

        self.json = json_format
        self._message = text_message
        self._names = FIELD_NAMES
        self._second = -1
        self._prefix = ""

    def line(self, created: float, values: tuple[Any, ...]) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            if self.json:
                self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            else:  # logging.Formatter's default asctime: local time, then milliseconds
                self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        fraction = created - second
        message = self._message(values)
        if not self.json:
            return f"{self._prefix},{int(fraction * 1000):03d} INFO {ACCESS}: {message}"
        line: dict[str, Any] = {
            "time": f"{self._prefix}.{int(fraction * 1_000_000):06d}Z",
            "level": "info",
            "logger": ACCESS,
            "message": message,
        }
        line.update(zip(self._names, values, strict=True))
        return _dumps(line)


class _Batcher(logging.Handler):
    """Keeps records for the writing thread, which formats and writes them a batch at a time."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self._lines = AccessLines(isinstance(formatter, JsonFormatter))
        self.stream = stream
        self.dropped = 0
        self._records: deque[logging.LogRecord | tuple[float, tuple[Any, ...]]] = deque()  # (time, values): access
        self._wake = threading.Event()
        self._stream_lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="orgwarden-log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(ACCESS):  # rare (start-up, warnings, errors): written now, in order
            self._flush([self.format(record)])
            return
        records = self._records
        if len(records) >= QUEUE_SIZE:
            self.dropped += 1  # standard error cannot keep up: lose a line, never wait for it
            return
        records.append(record)
        if len(records) >= WAKE_AT:
            self._wake.set()

    def access(self, values: tuple[Any, ...]) -> None:
        """An access line, kept as its values: the record is made by the writing thread."""
        records = self._records
        if len(records) >= QUEUE_SIZE:
            self.dropped += 1
            return
        records.append((time.time(), values))
        if len(records) >= WAKE_AT:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            self._write()
        self._write()

    def _write(self) -> None:
        records = self._records
        lines: list[str] = []
        access = self._lines.line
        while records:
            record = records.popleft()
            if isinstance(record, tuple):
                try:
                    lines.append(access(*record))
                except Exception:  # fields that cannot be formatted: reported as logging would
                    self.handleError(_access_record(*record))
                continue
            try:
                lines.append(self.format(record))
            except Exception:  # a record that cannot be formatted: logging's own report, not a crash
                self.handleError(record)
        if lines:
            self._flush(lines)

    def _flush(self, lines: list[str]) -> None:
        with self._stream_lock:  # a batch and a line written at once never interleave
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # standard error closed or broken: nothing else to tell
                self.dropped += len(lines)

    def close(self) -> None:
        """Write what is buffered and stop the thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=5)
        super().close()


def _access_record(created: float, values: tuple[Any, ...]) -> logging.LogRecord:
    """An access line as a log record (for ``handleError``'s report only)."""
    from orgwarden.observability.access import FIELD_NAMES

    fields = dict(zip(FIELD_NAMES, values, strict=False))
    record = logging.makeLogRecord(
        {"name": ACCESS, "levelno": logging.INFO, "levelname": "INFO", "msg": "%s", "args": (repr(fields),)}
    )
    record.created, record.msecs = created, (created - int(created)) * 1000
    setattr(record, FIELDS, fields)
    return record


_installed: list[_Batcher] = []
_access: list[_Batcher] = []  # the handler access lines go to, while the access log is on


def access(values: tuple[Any, ...]) -> None:
    """Write an access line (logger ``orgwarden.access``) with these values (``access.FIELD_NAMES``),
    if the access log is on."""
    if _access:
        _access[0].access(values)


def access_on() -> bool:
    return bool(_access)


def configure(settings: Settings) -> None:
    """Send every ``orgwarden.*`` log line to standard error in ``settings.log_format``, at
    ``settings.log_level``; the access log on or off with ``settings.access_log``."""
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    root = logging.getLogger(ROOT)
    shutdown()
    formatter = JsonFormatter() if settings.log_format == "json" else logging.Formatter(_TEXT)
    batcher = _Batcher(sys.stderr, formatter)
    root.addHandler(batcher)
    _installed.append(batcher)
    if settings.access_log:
        _access.append(batcher)
    root.setLevel(settings.log_level.upper())
    root.propagate = False  # not twice through a handler someone put on the root logger
    access = logging.getLogger(ACCESS)
    # Its own level: the access log is on or off whatever log_level says (it writes at INFO).
    access.setLevel(logging.INFO if settings.access_log else logging.CRITICAL + 1)


def dropped() -> int:
    """Log records dropped because the writing thread could not keep up (since ``configure``)."""
    return sum(batcher.dropped for batcher in _installed)


def shutdown() -> None:
    """Write what is queued and stop the writing thread (also run at exit)."""
    root = logging.getLogger(ROOT)
    _access.clear()
    while _installed:
        batcher = _installed.pop()
        root.removeHandler(batcher)
        batcher.close()


atexit.register(shutdown)
