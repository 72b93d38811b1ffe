"""Claude Code sessions on usage records: ``claude_code_session_id`` and ``claude_code_agent_id``

Revision ID: 0018
Revises: 0016
Create Date: 2026-12-07

Claude Code sends ``x-claude-code-session-id`` on every Messages request (and
``x-claude-code-agent-id`` on a subagent's), so usage can be told apart per session without its
OpenTelemetry export. Both are nullable (other clients, and every record written before), bounded
to 64 characters, and only on ``usage_records``: the rollups (and so the cost and usage reports) are
not split by session. No new index: the Claude Code report reads a period's records through
``ix_usage_records_org_time``, and every index costs the metering hot path an insert.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claude_code_session_id", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("claude_code_agent_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("claude_code_agent_id")
        batch_op.drop_column("claude_code_session_id")
