"""limits: rate-limit values, spend limits, spend alerts; usage look-ups by workspace and key

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Rate-limit values per level (organization, workspace, API key) and group; spend limits per scope and
period; the spend alerts already fired (one row per limit, period and threshold). Two indexes let a
restarted gateway rebuild a workspace's or key's period-to-date spend without scanning the
organization's records.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_values",
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("scope_type", sa.String(length=16), nullable=False),
        sa.Column("scope_id", _id(), nullable=False),
        sa.Column("group_name", sa.String(length=64), nullable=False),
        sa.Column("limiter", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("organization_id", "scope_type", "scope_id", "group_name", "limiter"),
    )
    op.create_table(
        "spend_limits",
        sa.Column("id", _id(), nullable=False),
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("scope_type", sa.String(length=16), nullable=False),
        sa.Column("scope_id", _id(), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("alert_thresholds", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("spend_limits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spend_limits_organization_id"), ["organization_id"], unique=False)
        batch_op.create_index(
            "uq_spend_limits_scope_period", ["organization_id", "scope_type", "scope_id", "period"], unique=True
        )
    op.create_table(
        "spend_alerts",
        sa.Column("spend_limit_id", _id(), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("spent_picodollars", sa.BigInteger(), nullable=False),
        sa.Column("fired_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("spend_limit_id", "period_start", "threshold"),
    )
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.create_index("ix_usage_records_workspace_time", ["workspace_id", "created_at"], unique=False)
        batch_op.create_index("ix_usage_records_key_time", ["api_key_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_records_key_time")
        batch_op.drop_index("ix_usage_records_workspace_time")
    op.drop_table("spend_alerts")
    with op.batch_alter_table("spend_limits", schema=None) as batch_op:
        batch_op.drop_index("uq_spend_limits_scope_period")
        batch_op.drop_index(batch_op.f("ix_spend_limits_organization_id"))
    op.drop_table("spend_limits")
    op.drop_table("rate_limit_values")
