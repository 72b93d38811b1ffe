"""organizations: ``offboarding_key_policy``, what offboarding a user does to the API keys they created

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

When a user is removed or deactivated (``services.offboarding``), their sessions, user tokens and
admin keys are always revoked. The data-plane API keys they created belong to workspaces, and what
happens to them is the organization's choice: ``deactivate`` (the default: they stop working, an
admin can turn them back on) or ``keep`` (they keep working). Existing organizations get the default.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("offboarding_key_policy", sa.String(length=16), server_default="deactivate", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("organizations", schema=None) as batch_op:
        batch_op.drop_column("offboarding_key_policy")
