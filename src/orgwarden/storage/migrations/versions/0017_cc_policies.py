"""cc_policies: Claude Code policies per RBAC group (managed settings and model access)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-12

One configuration row per organization (mode, order version, the base policy) and one policy per
RBAC group, ordered by ``position``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "cc_policy_configs",
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("mode_updated_at", sa.DateTime(), nullable=True),
        sa.Column("order_version", sa.Integer(), nullable=False),
        sa.Column("default_settings", sa.JSON(), nullable=True),
        sa.Column("default_allowed_models", sa.JSON(), nullable=True),
        sa.Column("default_denied_models", sa.JSON(), nullable=False),
        sa.Column("default_updated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("organization_id"),
    )
    op.create_table(
        "cc_policies",
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("rbac_group_id", _id(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("email_domains", sa.JSON(), nullable=False),
        sa.Column("allowed_models", sa.JSON(), nullable=True),
        sa.Column("denied_models", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("organization_id", "rbac_group_id"),
    )


def downgrade() -> None:
    op.drop_table("cc_policies")
    op.drop_table("cc_policy_configs")
