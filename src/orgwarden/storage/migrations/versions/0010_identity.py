"""identity: people who sign in (sessions, OAuth tokens, device authorizations), deactivated users

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

The shared schema of issue 16 (sign-in, roles, SCIM, offboarding):

- ``users.deactivated_at``: set when SCIM (or an admin) deactivates a user, cleared on reactivation.
  A user may act only while ``removed_at`` and ``deactivated_at`` are both null.
- ``user_sessions``: browser sessions after an OpenID Connect sign-in; the cookie carries a secret,
  the row only its SHA-256, so a session can be listed and revoked.
- ``user_tokens``: OAuth access and refresh tokens issued to a user (device flow, refresh). Only the
  SHA-256 is stored. A refresh token belongs to a ``family``: using it rotates it (``replaced_by``);
  reusing a rotated one revokes the whole family (RFC 6819 §5.2.2.3, OAuth 2.1 §4.3.1).
- ``device_authorizations``: RFC 8628 device codes, by the hash of the device code and by user code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deactivated_at", sa.DateTime(), nullable=True))
    op.create_table(
        "user_sessions",
        sa.Column("id", _id(), nullable=False),
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("user_id", _id(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_user_sessions_user_id", ["user_id"], unique=False)
    op.create_table(
        "user_tokens",
        sa.Column("id", _id(), nullable=False),
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("user_id", _id(), nullable=False),
        sa.Column("workspace_id", _id(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("family_id", _id(), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("replaced_by", _id(), nullable=True),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    with op.batch_alter_table("user_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_user_tokens_user_id", ["user_id"], unique=False)
        batch_op.create_index("ix_user_tokens_family_id", ["family_id"], unique=False)
    op.create_table(
        "device_authorizations",
        sa.Column("id", _id(), nullable=False),
        sa.Column("device_code_hash", sa.String(length=64), nullable=False),
        sa.Column("user_code", sa.String(length=16), nullable=False),
        sa.Column("client_id", sa.String(length=255), nullable=False),
        sa.Column("scope", sa.String(length=255), nullable=False),
        sa.Column("workspace_id", _id(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),  # pending | approved | denied | used
        sa.Column("organization_id", _id(36), nullable=True),
        sa.Column("user_id", _id(), nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("last_polled_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_code_hash"),
        sa.UniqueConstraint("user_code"),
    )


def downgrade() -> None:
    op.drop_table("device_authorizations")
    op.drop_table("user_tokens")
    op.drop_table("user_sessions")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("deactivated_at")
