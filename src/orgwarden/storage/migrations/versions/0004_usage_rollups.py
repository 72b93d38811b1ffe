"""usage rollups: usage summed per minute, hour and day and every reporting dimension

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Reports read these rows instead of scanning ``usage_records``. On PostgreSQL the table is partitioned
by bucket width (``usage_rollups_1m``, ``_1h``, ``_1d``; the same table to every statement): a report
reads one width, and in one shared heap the rows of that width would lie scattered among the others
(the per-minute rows are about nine in ten, and each adding upsert moves a row to wherever its new
version lands), so a 31-day daily report touched about one page per row; measured in
``bench/RESULTS.md``. SQLite keeps one table. Records written before this revision are rolled up
here, once. Those records kept only their total cost, so their cost per kind is
recomputed from their tokens with the prices in force (``ORGWARDEN_MODELS_FILE`` or the shipped
file); whatever differs from the stored total (a price changed since, an unpriced model) is counted
as uncached input cost, so the rolled-up total always equals the metered total.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql, sqlite

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DIMENSIONS = ("workspace_id", "api_key_id", "model", "service_tier", "context_window", "inference_geo", "speed")
MEASURES = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "web_search_requests",
    "cost_input",
    "cost_output",
    "cost_cache_write_5m",
    "cost_cache_write_1h",
    "cost_cache_read",
    "cost_web_search",
)
CHUNK = 5000


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


WIDTHS = ("1m", "1h", "1d")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    partitioned: dict[str, Any] = {"postgresql_partition_by": "LIST (bucket_width)"} if postgres else {}
    op.create_table(
        "usage_rollups",
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("bucket_width", sa.String(length=2), nullable=False),
        sa.Column("bucket_start", sa.DateTime(), nullable=False),
        sa.Column("workspace_id", _id(), nullable=False),
        sa.Column("api_key_id", _id(), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("service_tier", sa.String(length=32), nullable=False),
        sa.Column("context_window", sa.String(length=16), nullable=False),
        sa.Column("inference_geo", sa.String(length=32), nullable=False),
        sa.Column("speed", sa.String(length=16), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in MEASURES),
        sa.PrimaryKeyConstraint("organization_id", "bucket_width", "bucket_start", *DIMENSIONS),
        **partitioned,
    )
    if postgres:
        for width in WIDTHS:
            op.execute(f"CREATE TABLE usage_rollups_{width} PARTITION OF usage_rollups FOR VALUES IN ('{width}')")
    _backfill()


def _backfill() -> None:
    from orgwarden.data import load_catalog
    from orgwarden.domain.pricing import Cost, TokenUsage, cost_of
    from orgwarden.domain.rollups import Entry, fold, report_geo

    bind = op.get_bind()
    records = sa.table(
        "usage_records",
        *(sa.column(name) for name in ("id", "organization_id", "endpoint", "cost_picodollars")),
        sa.column("created_at", sa.DateTime()),  # typed: SQLite hands back text otherwise
        *(sa.column(name) for name in DIMENSIONS),
        *(sa.column(name) for name in MEASURES[1:7]),
    )
    rollups = sa.table(
        "usage_rollups",
        sa.column("organization_id"),
        sa.column("bucket_width"),
        sa.column("bucket_start", sa.DateTime()),
        *(sa.column(n) for n in (*DIMENSIONS, *MEASURES)),
    )
    insert = postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert
    catalog = None
    after = ""
    while True:
        chunk = bind.execute(
            sa.select(records).where(records.c.endpoint == "messages", records.c.id > after)
            .order_by(records.c.id).limit(CHUNK)
        ).mappings().all()  # fmt: skip
        if not chunk:
            return
        after = chunk[-1]["id"]
        if catalog is None:
            catalog = load_catalog(context.config.attributes.get("models_file"))
        entries = []
        for row in chunk:
            record: dict[str, Any] = dict(row)
            record["created_at"] = record["created_at"].replace(tzinfo=UTC)
            model = catalog.find(record["model"])
            geo = record["inference_geo"]
            parts = Cost(0, 0, 0, 0, 0, 0)
            if model is not None:
                usage = TokenUsage(
                    record["input_tokens"], record["output_tokens"], record["cache_creation_5m_tokens"],
                    record["cache_creation_1h_tokens"], record["cache_read_tokens"], record["web_search_requests"],
                )  # fmt: skip
                parts = cost_of(catalog, model, usage, inference_geo=geo)
            rest = record["cost_picodollars"] - parts.total
            parts = Cost(parts.input + rest, parts.output, parts.cache_write_5m, parts.cache_write_1h,
                         parts.cache_read, parts.web_search)  # fmt: skip
            entries.append(Entry(record, parts, report_geo(model, geo)))
        for folded in fold(entries):
            # only this revision's columns: later revisions add measures that fold() also returns
            rolled = {name: value for name, value in folded.items() if name in rollups.c}
            rolled["bucket_start"] = rolled["bucket_start"].replace(tzinfo=None)
            stmt = insert(rollups).values(rolled)
            stmt = stmt.on_conflict_do_update(
                index_elements=["organization_id", "bucket_width", "bucket_start", *DIMENSIONS],
                set_={name: rollups.c[name] + stmt.excluded[name] for name in MEASURES},
            )
            bind.execute(stmt)


def downgrade() -> None:
    op.drop_table("usage_rollups")  # and its partitions, on PostgreSQL
