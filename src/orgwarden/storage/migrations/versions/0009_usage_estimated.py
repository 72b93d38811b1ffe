"""usage records: ``usage_estimated``, set when the usage is orgwarden's estimate

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

An answer that ends without its final usage (a stream the client abandons or the upstream cuts
before ``message_delta``, a JSON body cut half-way) is metered from the content that was relayed
(``domain.usage``, ``domain.tokens.estimate_output``) and marked here, so that reports and audits can
tell an estimate from the upstream's own count. Rows written before are the upstream's counts (or
``message_start``'s placeholder): false.

``usage_rollups`` gets ``estimated_requests``, the number of such records in a row, which the usage
report shows; 0 for rows rolled up before. On PostgreSQL the column is added to the partitioned
table, and so to each width's partition.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("usage_estimated", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("estimated_requests", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.drop_column("estimated_requests")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("usage_estimated")
