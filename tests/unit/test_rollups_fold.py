"""``rollups.fold`` against the plainest statement of what it must return: every record added to
one row per bucket width, keyed by its bucket start and dimensions, rows sorted by key."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from orgwarden.domain.pricing import Cost
from orgwarden.domain.rollups import DIMENSIONS, MEASURES, TOKENS, WIDTHS, Entry, floor, fold


def reference(entries: list[Entry]) -> list[dict[str, Any]]:
    rows: dict[tuple[Any, ...], list[int]] = {}
    for entry in entries:
        record, cost = entry.record, entry.cost
        measures = [1, *(record[name] for name in TOKENS), cost.input, cost.output, cost.cache_write_5m,
                    cost.cache_write_1h, cost.cache_read, cost.web_search,
                    1 if record.get("usage_estimated") else 0]  # fmt: skip
        shown = {**record, "inference_geo": entry.inference_geo, "user_id": record["user_id"] or ""}  # no user: ""
        dimensions = [shown[name] for name in DIMENSIONS]
        for width in WIDTHS:
            key = (record["organization_id"], width, floor(record["created_at"], width), *dimensions)
            rows[key] = [a + b for a, b in zip(rows.get(key, [0] * len(measures)), measures, strict=True)]
    names = ("organization_id", "bucket_width", "bucket_start", *DIMENSIONS)
    return [dict(zip(names + MEASURES, (*key, *rows[key]), strict=True)) for key in sorted(rows)]


def test_fold_adds_every_record_to_its_minute_hour_and_day_rows() -> None:
    rng = random.Random(7)
    start = datetime(2026, 11, 30, 23, 58, 30, tzinfo=UTC)  # minutes, hours and days all roll over
    entries = []
    for _ in range(2000):
        record = {
            "organization_id": rng.choice(["org-a", "org-b"]),
            "created_at": start + timedelta(seconds=rng.uniform(0, 240)),
            "workspace_id": rng.choice(["wrkspc_1", "wrkspc_2"]),
            "api_key_id": rng.choice(["apikey_1", "apikey_2", "apikey_3"]),
            "user_id": rng.choice([None, "user_1", "user_2"]),
            "model": rng.choice(["claude-sonnet-4-6", "claude-opus-4-6"]),
            "service_tier": rng.choice(["standard", "batch"]),
            "context_window": rng.choice(["0-200k", "200k-1M"]),
            "inference_geo": rng.choice(["global", "us"]),
            "speed": "standard",
            "usage_estimated": rng.random() < 0.1,
            **{name: rng.randrange(0, 10_000) for name in TOKENS},
        }
        cost = Cost(*(rng.randrange(0, 10**12) for _ in range(6)))
        geo = "not_available" if record["model"] == "claude-opus-4-6" else str(record["inference_geo"])
        entries.append(Entry(record, cost, geo))
    folded = fold(entries)
    assert folded == reference(entries)
    assert {row["bucket_width"] for row in folded} == set(WIDTHS)
    assert sum(row["requests"] for row in folded if row["bucket_width"] == "1d") == 2000
    estimated = sum(bool(entry.record["usage_estimated"]) for entry in entries)
    assert sum(row["estimated_requests"] for row in folded if row["bucket_width"] == "1d") == estimated > 0
    assert fold([]) == []
