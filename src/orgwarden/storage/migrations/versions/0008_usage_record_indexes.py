"""usage records: drop the two indexes nothing reads any more

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

0003 indexed ``usage_records`` by workspace and by API key (with ``created_at``) for the spend
limits' period-to-date baselines. Those baselines, like every report, now read the day rollups
(0004), so the two indexes only cost every metered request two more index inserts (on SQLite, a
measurable share of the recorder's write: bench/RESULTS.md). The organization index (0002) stays:
reading an organization's records (tests, exports) uses it. Downgrading creates them again.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_usage_records_key_time", table_name="usage_records")
    op.drop_index("ix_usage_records_workspace_time", table_name="usage_records")


def downgrade() -> None:
    op.create_index("ix_usage_records_workspace_time", "usage_records", ["workspace_id", "created_at"], unique=False)
    op.create_index("ix_usage_records_key_time", "usage_records", ["api_key_id", "created_at"], unique=False)
