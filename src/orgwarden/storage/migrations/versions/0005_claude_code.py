"""claude code: daily telemetry aggregates and OTLP series state

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

What the Claude Code usage report reads (``GET /v1/organizations/usage_report/claude_code``): per UTC
day and actor, the core figures (per terminal), tokens and cost per model, and code edit tool
decisions per tool; plus the last point seen of each OTLP series, so that cumulative points and
repeated exports add only what is new. No foreign keys: these are append-mostly telemetry rows, like
``usage_records``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _actor_day() -> list[sa.Column[Any]]:
    return [
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("actor_type", _id(16), nullable=False),
        sa.Column("actor", _id(320), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "claude_code_daily",
        *_actor_day(),
        sa.Column("terminal_type", sa.String(length=64), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("commits", sa.BigInteger(), nullable=False),
        sa.Column("pull_requests", sa.BigInteger(), nullable=False),
        sa.Column("lines_added", sa.BigInteger(), nullable=False),
        sa.Column("lines_removed", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "day", "actor_type", "actor", "terminal_type"),
    )
    op.create_table(
        "claude_code_model_daily",
        *_actor_day(),
        sa.Column("model", _id(128), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_creation_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_picodollars", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "day", "actor_type", "actor", "model"),
    )
    op.create_table(
        "claude_code_tool_daily",
        *_actor_day(),
        sa.Column("tool", _id(64), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "day", "actor_type", "actor", "tool"),
    )
    op.create_table(
        "claude_code_series",
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("series_key", sa.String(length=64), nullable=False),
        sa.Column("start_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("time_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("last_value", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "series_key"),
    )
    with op.batch_alter_table("claude_code_series", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_claude_code_series_updated_at"), ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("claude_code_series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claude_code_series_updated_at"))
    op.drop_table("claude_code_series")
    op.drop_table("claude_code_tool_daily")
    op.drop_table("claude_code_model_daily")
    op.drop_table("claude_code_daily")
