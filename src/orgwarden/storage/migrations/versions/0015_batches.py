"""message batches: the batches created through the gateway, their reservation and their metering

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-10

One row per Message Batch created through orgwarden (the id is the upstream's): who created it
(organization, workspace, API key or user), the spend it reserved against the spend limits and the
counters it reserved on (so that the reservation can be settled after a restart, and counted by a
limits store that starts its counters again), and its metering: ``metered_at`` is set by the one
instance that claims the batch (a conditional UPDATE), ``settled_at`` once its results were metered
and its reservation replaced by the metered cost.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "message_batches",
        sa.Column("id", _id(), nullable=False),
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("workspace_id", _id(), nullable=False),
        sa.Column("api_key_id", _id(), nullable=False),
        sa.Column("user_id", _id(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("processing_status", sa.String(length=16), nullable=False),
        sa.Column("request_count", sa.Integer(), nullable=False),
        sa.Column("reserved_picodollars", sa.BigInteger(), nullable=False),
        sa.Column("reserved_counters", sa.JSON(), nullable=False),
        sa.Column("spend_counters", sa.JSON(), nullable=False),
        sa.Column("metered_at", sa.DateTime(), nullable=True),
        sa.Column("settled_at", sa.DateTime(), nullable=True),
        sa.Column("metered_results", sa.Integer(), nullable=True),
        sa.Column("metered_picodollars", sa.BigInteger(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("message_batches", schema=None) as batch_op:
        batch_op.create_index("ix_message_batches_workspace", ["workspace_id", "id"], unique=False)
        batch_op.create_index("ix_message_batches_unsettled", ["settled_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("message_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_message_batches_unsettled")
        batch_op.drop_index("ix_message_batches_workspace")
    op.drop_table("message_batches")
