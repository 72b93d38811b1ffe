"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC, returned as aware UTC.

    SQLite has no time zones and PostgreSQL's ``timestamptz`` would convert to the session zone;
    storing naive UTC everywhere keeps comparisons and ordering identical on both.
    """

    impl = DateTime
    cache_ok = True

    # ``datetime.combine(d.date(), d.time(), tz)`` rather than ``d.replace(tzinfo=tz)``: the same
    # value, at a third of the cost (``replace`` parses its keywords); every usage record is bound.

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return datetime.combine(value.date(), value.time())

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return datetime.combine(value.date(), value.time(), UTC)


def IdString(length: int = 64) -> TypeEngine[str]:
    """A string compared byte by byte, so ids sort the same in the database as in Python.

    PostgreSQL's default collation would sort ``a`` before ``B``; the "C" collation does not. SQLite
    already compares bytes (and has no "C" collation).
    """
    return String(length).with_variant(String(length, collation="C"), "postgresql")
