"""tunnels: MCP tunnels and their CA certificates

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25

A tunnel is a hostname under the configured base domain plus a connection token (encrypted with the
server secret, and hashed for look-up). ``domain`` is unique over every row, archived ones included:
archived tunnels are kept, so a hostname is never handed out twice. Certificates are kept when
archived, too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tunnels",
        sa.Column("id", _id(), nullable=False),
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("workspace_id", _id(), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("token_id", sa.String(length=69), nullable=True),
        sa.Column("token_encrypted", sa.String(length=256), nullable=True),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("archived_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("domain"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("tunnels", schema=None) as batch_op:
        batch_op.create_index("ix_tunnels_org_created", ["organization_id", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tunnels_workspace_id"), ["workspace_id"], unique=False)
    op.create_table(
        "tunnel_certificates",
        sa.Column("id", _id(), nullable=False),
        sa.Column("tunnel_id", _id(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("archived_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["tunnel_id"], ["tunnels.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tunnel_certificates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tunnel_certificates_tunnel_id"), ["tunnel_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tunnel_certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tunnel_certificates_tunnel_id"))
    op.drop_table("tunnel_certificates")
    with op.batch_alter_table("tunnels", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tunnels_workspace_id"))
        batch_op.drop_index("ix_tunnels_org_created")
    op.drop_table("tunnels")
