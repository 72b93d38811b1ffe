"""gateway: usage records, cache events, workspace upstream key

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

The data plane's tables: one usage record per request that reached the upstream (costs in integer
picodollars), the cache-event log that gateway workers poll to drop stale cached keys, and each
workspace's optional upstream API key (encrypted).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def _id(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cache_events",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("entity_type", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "usage_records",
        sa.Column(
            "id", sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"), nullable=False
        ),
        sa.Column(
            "organization_id",
            sa.String(length=36).with_variant(sa.String(length=36, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "workspace_id",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "api_key_id",
            sa.String(length=64).with_variant(sa.String(length=64, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("service_tier", sa.String(length=32), nullable=False),
        sa.Column("inference_geo", sa.String(length=32), nullable=False),
        sa.Column("context_window", sa.String(length=16), nullable=False),
        sa.Column("speed", sa.String(length=16), nullable=False),
        sa.Column("endpoint", sa.String(length=32), nullable=False),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("completed", sa.Boolean(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_creation_5m_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_creation_1h_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False),
        sa.Column("web_search_requests", sa.Integer(), nullable=False),
        sa.Column("cost_picodollars", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.create_index("ix_usage_records_org_time", ["organization_id", "created_at"], unique=False)

    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upstream_api_key_encrypted", sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.drop_column("upstream_api_key_encrypted")

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_records_org_time")

    op.drop_table("usage_records")
    op.drop_table("cache_events")
