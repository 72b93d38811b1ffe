"""Device sign-ins re-checked at the identity provider, and bounded in age

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-13

- ``user_token_families``: one row per device sign-in (the tokens sharing ``family_id``): when it
  began (``signin_max_age_seconds`` counts from there) and the identity provider's refresh token,
  sealed with the server secret, that each refresh of the family re-checks the person with.
  Existing families are filled in from their oldest token, with no IdP refresh token.
- ``user_sessions.idp_refresh_token`` and ``device_authorizations.idp_refresh_token``: the same
  token, sealed, on its way from the browser sign-in to the family of a device approved from it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "user_token_families",
        sa.Column("id", _id(), nullable=False),
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("user_id", _id(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("idp_refresh_token", sa.Text(), nullable=True),
        sa.Column("idp_checked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_user_token_families_user_id", "user_token_families", ["user_id"])
    op.execute(
        "INSERT INTO user_token_families (id, organization_id, user_id, created_at)"
        " SELECT family_id, MIN(organization_id), MIN(user_id), MIN(created_at) FROM user_tokens GROUP BY family_id"
    )
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idp_refresh_token", sa.Text(), nullable=True))
    with op.batch_alter_table("device_authorizations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idp_refresh_token", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_authorizations", schema=None) as batch_op:
        batch_op.drop_column("idp_refresh_token")
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.drop_column("idp_refresh_token")
    op.drop_index("ix_user_token_families_user_id", table_name="user_token_families")
    op.drop_table("user_token_families")
