"""Statuses that depend on the clock: an invite or key past its expiry reads ``expired``.

The stored status is what a person set (``pending``, ``active`` ...); the status on the wire is derived
from it and the time, so nothing has to sweep rows when they expire.
"""

from __future__ import annotations

from datetime import UTC, datetime


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def invite_status(stored: str, expires_at: datetime, now: datetime) -> str:
    if stored == "pending" and _aware(expires_at) <= now:
        return "expired"
    return stored


def api_key_status(stored: str, expires_at: datetime | None, now: datetime) -> str:
    if stored in ("active", "inactive") and expires_at is not None and _aware(expires_at) <= now:
        return "expired"
    return stored
