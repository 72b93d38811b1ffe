"""files: the Files API's uploads and the workspace each belongs to

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-10

A file uploaded through the gateway is recorded with its workspace, so that a key sees only its own
workspace's files (the upstream key may be organization-wide). Its metadata as the upstream answered
(bounded); files uploaded before are not in it, and not reachable through the gateway.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("workspace_id", _id(), nullable=False),
        sa.Column("api_key_id", _id(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("mime_type", sa.String(length=255), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("downloadable", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index("ix_files_workspace_created", ["workspace_id", "created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.drop_index("ix_files_workspace_created")
    op.drop_table("files")
