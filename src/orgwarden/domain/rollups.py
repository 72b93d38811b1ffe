"""Usage rolled up per time bucket and reporting dimension: what the usage and cost reports read.

Every ``/v1/messages`` usage record adds itself to one row per bucket width (``1m``, ``1h``, ``1d``):
the row of its bucket and its dimensions. A batch of records is folded here first (so a batch writes
each row once, in a fixed order, which keeps concurrent writers on PostgreSQL from deadlocking), then
added to the stored rows by an upsert in the transaction that inserts the records.

Costs are kept per kind as metered (picodollars), not recomputed from tokens later: a price changed
tomorrow must not rewrite yesterday's cost report, and the kinds add up to the metered total exactly.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from orgwarden.domain.catalog import Model
from orgwarden.domain.pricing import Cost

Width = Literal["1m", "1h", "1d"]
WIDTHS: tuple[Width, ...] = ("1m", "1h", "1d")
STEP: dict[str, timedelta] = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}

# ``user_id``: the user of a user-token request, "" for API-key traffic (whose ``api_key_id`` is set;
# a user token's records have ``api_key_id`` "").
DIMENSIONS = (
    "workspace_id", "api_key_id", "model", "service_tier", "context_window", "inference_geo", "speed", "user_id",
)  # fmt: skip
TOKENS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
)
COSTS = (
    "cost_input",
    "cost_output",
    "cost_cache_write_5m",
    "cost_cache_write_1h",
    "cost_cache_read",
    "cost_web_search",
)
# ``estimated_requests``: records whose usage is orgwarden's estimate (``usage_estimated``), kept so
# that reports can say how much of a bucket was estimated; their tokens and costs count like others.
MEASURES = ("requests", *TOKENS, *COSTS, "estimated_requests")

NOT_AVAILABLE = "not_available"  # the report's inference_geo for models that take no inference_geo


def report_geo(model: Model | None, geo: str) -> str:
    """The inference geo reports show: ``not_available`` for a model that takes none (the spec);
    an unknown model keeps the geo it was sent with."""
    return NOT_AVAILABLE if model is not None and not model.geo_multiplier_applies else geo


def floor(moment: datetime, width: str) -> datetime:
    """The start of the UTC minute, hour or day holding ``moment`` (which must be aware). Built with
    the constructor rather than ``replace``, whose keyword parsing costs twice as much (this runs for
    every usage record)."""
    if width == "1m":
        return datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute, 0, 0, moment.tzinfo)
    if width == "1h":
        return datetime(moment.year, moment.month, moment.day, moment.hour, 0, 0, 0, moment.tzinfo)
    return datetime(moment.year, moment.month, moment.day, 0, 0, 0, 0, moment.tzinfo)


@dataclass(slots=True)  # not frozen, though never changed: see domain.buckets.Bucket
class Entry:
    """A usage record as the rollups see it: the record's columns, its cost per kind, and the
    inference geo reports show (``not_available`` for a model that does not take one)."""

    record: Mapping[str, Any]
    cost: Cost
    inference_geo: str


# One C call each per record: its dimensions (all but the report geo and the user, in DIMENSIONS'
# order), its token counts and its cost per kind.
_RECORD_DIMENSIONS = operator.itemgetter("workspace_id", "api_key_id", "model", "service_tier", "context_window")
_RECORD_TOKENS = operator.itemgetter(*TOKENS)
_COST_KINDS = operator.attrgetter("input", "output", "cache_write_5m", "cache_write_1h", "cache_read", "web_search")


def _measures(group: list[Entry]) -> list[int]:
    """``MEASURES`` summed over ``group``, in that order: per column, in C (zip and sum), since every
    record of a batch passes through here."""
    records = [entry.record for entry in group]
    tokens = [sum(column) for column in zip(*map(_RECORD_TOKENS, records), strict=True)]
    costs = [sum(column) for column in zip(*map(_COST_KINDS, [entry.cost for entry in group]), strict=True)]
    estimated = sum(1 for record in records if record.get("usage_estimated"))
    return [len(group), *tokens, *costs, estimated]


def _add(totals: dict[tuple[Any, ...], list[int]], key: tuple[Any, ...], measures: list[int]) -> None:
    total = totals.get(key)
    # A new list on every addition, never one changed in place: a list may be shared by several keys.
    totals[key] = measures if total is None else list(map(operator.add, total, measures))


def fold(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    """The rollup rows a batch adds: one per (width, bucket, dimensions), sorted by their key.

    Records are summed per minute first and the hour and day rows made from those sums: a batch
    holds a few minutes of a few dimensions, so the per-record work is one key and one append."""
    # Records grouped by organization, minute (the instant's, as an integer: comparing aware times
    # compares instants too) and dimensions; each group is summed once, column by column.
    groups: dict[tuple[Any, ...], list[Entry]] = {}
    for entry in entries:
        record = entry.record
        at = record["created_at"]
        key = (
            record["organization_id"], at.timestamp() // 60, _RECORD_DIMENSIONS(record), entry.inference_geo,
            record["speed"], record.get("user_id") or "",
        )  # fmt: skip
        group = groups.get(key)
        if group is None:
            groups[key] = [entry]
        else:
            group.append(entry)
    minutes: dict[tuple[Any, ...], list[int]] = {}
    for (organization_id, _, dimensions, geo, speed, user), group in groups.items():
        minute = floor(group[0].record["created_at"], "1m")
        _add(minutes, (organization_id, minute, *dimensions, geo, speed, user), _measures(group))  # DIMENSIONS' order
    rows: dict[tuple[Any, ...], list[int]] = {}
    for (organization_id, minute, *dimensions), measures in minutes.items():
        for width in WIDTHS:
            start = minute if width == "1m" else floor(minute, width)
            _add(rows, (organization_id, width, start, *dimensions), measures)
    names = ("organization_id", "bucket_width", "bucket_start", *DIMENSIONS)
    return [
        {**dict(zip(names, key, strict=True)), **dict(zip(MEASURES, rows[key], strict=True))} for key in sorted(rows)
    ]
