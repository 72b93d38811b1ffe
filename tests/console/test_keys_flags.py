"""The key list's flags, computed from a key and its last metered day (a pure function)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orgwarden.console.keys import flags
from orgwarden.storage.tables import ApiKey

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def _key(created: datetime, expires: datetime | None = None) -> ApiKey:
    return ApiKey(id="apikey_x", name="k", status="active", created_at=created, expires_at=expires)


def test_a_key_expiring_within_seven_days_is_flagged_and_one_after_is_not() -> None:
    assert flags(_key(NOW, NOW + timedelta(days=6, hours=23)), "active", None, NOW)[0]
    assert not flags(_key(NOW, NOW + timedelta(days=7, minutes=1)), "active", None, NOW)[0]
    assert not flags(_key(NOW, NOW + timedelta(days=3)), "archived", None, NOW)[0]


def test_a_key_older_than_thirty_days_without_recent_use_is_flagged_unused() -> None:
    old = NOW - timedelta(days=45)
    assert flags(_key(old), "active", None, NOW)[1]  # never used
    day = datetime(2026, 5, 10, tzinfo=UTC)  # more than 30 days before NOW
    assert flags(_key(old), "inactive", day, NOW)[1]
    assert not flags(_key(old), "active", datetime(2026, 6, 1, tzinfo=UTC), NOW)[1]


def test_a_new_key_is_not_flagged_unused_even_if_never_used() -> None:
    assert not flags(_key(NOW - timedelta(days=29)), "active", None, NOW)[1]
    assert not flags(_key(NOW - timedelta(days=90)), "expired", None, NOW)[1]
