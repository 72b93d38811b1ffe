"""The usage journal: every record the recorder is given, on local disk until the database has it.

Each process appends one line per usage record or audit event (JSON with a type tag; datetimes and
Decimals tagged so they read back exactly) to its own segment file in
``<data_dir>/journal/<database>/`` with a plain ``os.write`` on an ``O_APPEND`` descriptor. That
happens in ``Recorder.offer``, before the gateway completes its answer: once ``write`` returned the
line is in the kernel's page cache, which a killed process (SIGKILL, OOM killer, a crash) does not
take with it. There is no fsync per record: a power loss or kernel crash can lose what the kernel
had not written back yet (typically the last few seconds; ``vm.dirty_expire_centisecs``).

A segment is deleted when every record in it has been committed (or dropped as refused); the
current segment is emptied whenever everything in it is, and a new one is started past
``SEGMENT_BYTES``, so the journal stays as small as what is pending. Each open segment holds an
exclusive ``flock``: a segment that can be locked at start has no living owner (its process died
or stopped with records unwritten), and ``orphans`` hands its records to the recorder, which writes
them idempotently (insert-if-absent, by id). The journal is per database (the directory is named
after a hash of the database URL, password left out), so instances of other databases sharing a
data directory never replay each other's records.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import operator
import os
import time
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import orjson

from orgwarden.domain.pricing import Cost
from orgwarden.domain.rollups import Entry
from orgwarden.storage.tables import UsageRecord

log = logging.getLogger("orgwarden.gateway")

SEGMENT_BYTES = 4 * 1024 * 1024
SUFFIX = ".journal"
_DT = "$orgwarden.datetime"
_DEC = "$orgwarden.decimal"

Record = tuple[Literal["usage", "audit"], dict[str, Any], Entry | None]


def journal_dir(data_dir: Path, database_url: str) -> Path:
    """``<data_dir>/journal/<16 hex of the database URL's hash>``, password left out."""
    from sqlalchemy.engine import make_url

    shown = make_url(database_url).render_as_string(hide_password=True)
    return data_dir / "journal" / hashlib.sha256(shown.encode()).hexdigest()[:16]


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {_DT: value.isoformat()}
    if isinstance(value, Decimal):
        return {_DEC: str(value)}
    raise TypeError(f"cannot journal a {type(value).__name__}")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if _DT in obj:
            return datetime.fromisoformat(obj[_DT])
        if _DEC in obj:
            return Decimal(obj[_DEC])
    return obj


# One encoder for every line: json.dumps with a ``default`` builds a new encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_default)
_USAGE = tuple(column.key for column in UsageRecord.__table__.columns)
_USAGE_VALUES = operator.itemgetter(*_USAGE)
_CREATED = _USAGE.index("created_at")
_NEWLINE = orjson.OPT_APPEND_NEWLINE


def encode(kind: str, row: dict[str, Any], rollup: Entry | None) -> bytes:
    """One journal line. A whole usage record (every column, as the gateway makes them) is written
    compactly, its values in column order: ``["u", [values], [cost per kind] | null, geo | null]``,
    with orjson (the same JSON, about a tenth of the standard library's cost: every request pays for
    it; ``bench/journal.py``); anything else in the general form ``{"k": kind, "r": row, "c": ...,
    "g": ...}``. An entry's record is the row itself."""
    if kind == "usage" and len(row) == len(_USAGE):
        try:
            values = _USAGE_VALUES(row)
            if type(values[_CREATED]) is datetime:  # orjson writes it as its isoformat() reads
                if rollup is None:
                    return orjson.dumps(("u", values, None, None), option=_NEWLINE)
                c = rollup.cost
                costs = (c.input, c.output, c.cache_write_5m, c.cache_write_1h, c.cache_read, c.web_search)
                return orjson.dumps(("u", values, costs, rollup.inference_geo), option=_NEWLINE)
        except (KeyError, TypeError, ValueError, orjson.JSONEncodeError):
            pass  # not a plain record: the general form below
    line: dict[str, Any] = {"k": kind, "r": row}
    if rollup is not None:
        c = rollup.cost
        line["c"] = [c.input, c.output, c.cache_write_5m, c.cache_write_1h, c.cache_read, c.web_search]
        line["g"] = rollup.inference_geo
    return _ENCODER.encode(line).encode() + b"\n"


def decode(line: bytes) -> Record:
    data = json.loads(line, object_hook=_hook)
    if isinstance(data, list):
        _, values, costs, geo = data
        if len(values) < len(_USAGE):  # written before the last columns were added (user_id: 0014): null
            values = [*values, *[None] * (len(_USAGE) - len(values))]
        record = dict(zip(_USAGE, values, strict=True))
        record["created_at"] = datetime.fromisoformat(record["created_at"])
        return "usage", record, None if costs is None else Entry(record, Cost(*costs), geo)
    kind, row = data["k"], data["r"]
    if kind not in ("usage", "audit") or not isinstance(row, dict):
        raise ValueError(f"unknown record kind {kind!r}")
    rollup = Entry(row, Cost(*data["c"]), data["g"]) if "c" in data else None
    return kind, row, rollup


class _Segment:
    __slots__ = ("fd", "number", "path", "pending", "size")

    def __init__(self, path: Path, number: int) -> None:
        self.path, self.number = path, number
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.pending = 0
        self.size = 0


class Journal:
    """This process's segments. ``append`` returns the segment a record went to; ``done`` is told
    when the record is committed (or dropped) and deletes segments that hold nothing pending."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self._segment_bytes = segment_bytes
        self._prefix = f"{os.getpid()}-{time.time_ns()}-"
        self._segments: dict[int, _Segment] = {}
        self._current: _Segment | None = None
        self._next = 0
        self.errors = 0  # appends that failed (disk full...): those records are in memory only

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._rotate()

    @property
    def pending(self) -> int:
        """Records appended and not yet committed: what a start would replay were we to die now."""
        return sum(segment.pending for segment in self._segments.values())

    @property
    def segments(self) -> int:
        return len(self._segments)

    def append(self, line: bytes) -> int:
        """Write one encoded record; its segment number, or -1 when it could not be written (logged;
        the record still goes to the database, it only lacks the crash protection)."""
        segment = self._current
        if segment is None:
            return -1
        written = 0
        try:
            written = os.write(segment.fd, line)
            if written != len(line):  # a short write (disk full mid-line): finish it or fail
                written += os.write(segment.fd, line[written:])
        except OSError as exc:
            if written:  # end the partial line, so the next record starts a line of its own
                with contextlib.suppress(OSError):
                    os.write(segment.fd, b"\n")
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.error("journal: cannot append to %s (%s); %d records unjournaled", segment.path, exc, self.errors)
            return -1
        segment.pending += 1
        segment.size += len(line)
        if segment.size >= self._segment_bytes:
            self._rotate()
        return segment.number

    def done(self, number: int, count: int = 1) -> None:
        """``count`` records of segment ``number`` are in the database (or were dropped)."""
        segment = self._segments.get(number)
        if segment is None:
            return
        segment.pending -= count
        if segment.pending > 0:
            return
        if segment is self._current:
            if segment.size:  # everything in it is written: empty it rather than start another
                os.ftruncate(segment.fd, 0)
                segment.size = 0
            return
        self._remove(segment)

    def _rotate(self) -> None:
        old = self._current
        number = self._next
        self._next += 1
        path = self.directory / f"{self._prefix}{number:06d}{SUFFIX}"
        try:
            try:
                segment = _Segment(path, number)
            except FileNotFoundError:  # another process just removed the empty directory
                self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                segment = _Segment(path, number)
        except OSError as exc:
            log.error("journal: cannot create %s (%s); records are kept in memory only", path, exc)
            self._current = None
            return
        self._segments[number] = self._current = segment
        if old is not None and old.pending <= 0:
            self._remove(old)

    def _remove(self, segment: _Segment) -> None:
        self._segments.pop(segment.number, None)
        with contextlib.suppress(OSError):
            os.unlink(segment.path)
        os.close(segment.fd)

    def close(self) -> int:
        """Release every segment (their locks go with them); empty ones are deleted. Returns how many
        records are left in the journal for the next start."""
        left = 0
        for segment in list(self._segments.values()):
            if segment.pending <= 0:
                self._remove(segment)
            else:
                left += segment.pending
                os.close(segment.fd)
                self._segments.pop(segment.number, None)
        self._current = None
        with contextlib.suppress(OSError):  # nothing left for this database: no empty directory behind
            self.directory.rmdir()
        return left

    def orphans(self) -> Iterator[tuple[Path, list[Record]]]:
        """Segments whose owner is gone (their lock can be taken), with their records, oldest first.
        The caller deletes each with ``forget`` once its records are safe elsewhere; the lock is held
        until then, so two processes starting at once do not both replay one segment."""
        if not self.directory.is_dir():
            return
        own = {segment.path for segment in self._segments.values()}
        for path in sorted(self.directory.glob(f"*{SUFFIX}"), key=_age):
            if path in own:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # its process is alive
                raise
            try:
                if os.fstat(fd).st_nlink == 0:  # replayed and deleted by another process meanwhile
                    continue
                with os.fdopen(os.dup(fd), "rb") as handle:
                    data = handle.read()
                yield path, _records(path, data)
            finally:
                os.close(fd)

    @staticmethod
    def forget(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _age(path: Path) -> tuple[int, int, str]:
    """Segments sort by their process's start time, then segment number."""
    parts = path.name.removesuffix(SUFFIX).split("-")
    try:
        return int(parts[1]), int(parts[2]), path.name
    except (IndexError, ValueError):
        return 0, 0, path.name


def _records(path: Path, data: bytes) -> list[Record]:
    found = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            found.append(decode(line))
        except (ValueError, KeyError, TypeError) as exc:  # a line cut by a crash mid-write, or damage
            log.error("journal: %s line %d cannot be read (%s); skipped", path.name, number, exc)
    return found
