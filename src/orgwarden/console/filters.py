"""Reading report filters from a console page's query string, the way the Admin API reads them.

Array parameters are read in both spellings (``group_by=a`` and ``group_by[]=a``) and, for the
console's text fields, as comma-separated lists. A date alone (``2026-12-01``) means midnight UTC;
anything else is passed on as the RFC 3339 timestamp the report service checks (and refuses with
its own message). Every value is bounded before it goes anywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Final
from urllib.parse import urlencode

from starlette.requests import Request

from orgwarden.errors import InvalidRequest

MAX_VALUES: Final = 100
MAX_CHARS: Final = 200
_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def one(request: Request, name: str) -> str | None:
    """A single parameter (empty means absent); given twice is ambiguous: 400."""
    values = [v for v in request.query_params.getlist(name) if v != ""]
    if len(values) > 1:
        raise InvalidRequest(f"{name}: given more than once")
    if not values:
        return None
    value = values[0].strip()
    if len(value) > MAX_CHARS or "\x00" in value:
        raise InvalidRequest(f"{name}: longer than {MAX_CHARS} characters or not text")
    return value or None


def many(request: Request, name: str) -> list[str]:
    """A list parameter: repeated, ``name[]``, or comma-separated; order kept, duplicates dropped."""
    raw = request.query_params.getlist(name) + request.query_params.getlist(f"{name}[]")
    values: list[str] = []
    for item in raw:
        for part in item.split(","):
            value = part.strip()
            if not value:
                continue
            if len(value) > MAX_CHARS or "\x00" in value:
                raise InvalidRequest(f"{name}: a value is longer than {MAX_CHARS} characters or not text")
            if value not in values:
                values.append(value)
    if len(values) > MAX_VALUES:
        raise InvalidRequest(f"{name}: at most {MAX_VALUES} values, got {len(values)}")
    return values


def timestamp(value: str | None) -> str | None:
    """``YYYY-MM-DD`` → that day's midnight UTC in RFC 3339; anything else unchanged."""
    if value is not None and _DATE.fullmatch(value):
        return f"{value}T00:00:00Z"
    return value


def month_start(now: datetime | None = None) -> date:
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return today.replace(day=1)


def days_ago(days: int, now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(UTC).date() - timedelta(days=days)


def query(params: dict[str, str | list[str] | None]) -> str:
    """A query string of the non-empty ``params`` (lists as repeated parameters)."""
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, list):
            pairs += [(name, v) for v in value]
        else:
            pairs.append((name, value))
    return urlencode(pairs)
