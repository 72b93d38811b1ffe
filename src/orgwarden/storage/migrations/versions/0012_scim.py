"""scim: SCIM tokens, SCIM users' attributes, RBAC groups and the roles they grant

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-06

Issue 16 §3 (SCIM 2.0 provisioning, groups and role mapping):

- ``scim_tokens``: bearer tokens of the identity provider on ``/scim/v2``; only the SHA-256 is kept.
- ``scim_users``: the SCIM side of a provisioned user (``userName``, ``externalId``, the attributes
  orgwarden does not model, a version for ETags). ``user_name_key`` is the lower-cased ``userName``
  (SCIM's ``userName`` is case-insensitive), unique per organization.
- ``rbac_groups``: groups (the SDK's ``rbac_groups``), from SCIM, the Admin API or the CLI; the org
  role a group grants (``org_role``) and, in ``rbac_group_workspace_roles``, its workspace roles.
- ``rbac_group_members``: who is in a group, and how they got there (``scim``, ``oidc``, ``direct``).
- ``managed_roles``: for each (user, scope) whose role a group raised, the role the user would have
  without groups (``direct_role``) and the one orgwarden set (``managed_role``), so that leaving a
  group gives the direct role back and a direct change made meanwhile is noticed and kept.
- ``invite_rbac_groups``: the groups an invite adds its user to on acceptance (``rbac_group_ids``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def _id(length: int = 64) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scim_tokens",
        sa.Column("id", _id(), nullable=False),
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("partial_hint", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
    )
    op.create_table(
        "scim_users",
        sa.Column("user_id", _id(), nullable=False),
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("user_name", sa.String(length=320), nullable=False),
        sa.Column("user_name_key", sa.String(length=320), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("user_id"),
    )
    with op.batch_alter_table("scim_users", schema=None) as batch_op:
        batch_op.create_index("uq_scim_users_org_user_name", ["organization_id", "user_name_key"], unique=True)
        batch_op.create_index("ix_scim_users_org_external_id", ["organization_id", "external_id"], unique=False)
    op.create_table(
        "rbac_groups",
        sa.Column("id", _id(), nullable=False),
        sa.Column("organization_id", _id(36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("source_type", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("org_role", sa.String(length=32), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rbac_groups", schema=None) as batch_op:
        batch_op.create_index("ix_rbac_groups_org_name", ["organization_id", "name"], unique=False)
    op.create_table(
        "rbac_group_members",
        sa.Column("group_id", _id(), nullable=False),
        sa.Column("user_id", _id(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("display", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["rbac_groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("group_id", "user_id"),
    )
    with op.batch_alter_table("rbac_group_members", schema=None) as batch_op:
        batch_op.create_index("ix_rbac_group_members_user_id", ["user_id"], unique=False)
    op.create_table(
        "rbac_group_workspace_roles",
        sa.Column("group_id", _id(), nullable=False),
        sa.Column("workspace_id", _id(), nullable=False),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["rbac_groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("group_id", "workspace_id"),
    )
    op.create_table(
        "managed_roles",
        sa.Column("user_id", _id(), nullable=False),
        sa.Column("scope", _id(), nullable=False),  # "organization" or a workspace id
        sa.Column("direct_role", sa.String(length=40), nullable=True),
        sa.Column("managed_role", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("user_id", "scope"),
    )
    op.create_table(
        "invite_rbac_groups",
        sa.Column("invite_id", _id(), nullable=False),
        sa.Column("group_id", _id(), nullable=False),
        sa.ForeignKeyConstraint(["invite_id"], ["invites.id"]),
        sa.ForeignKeyConstraint(["group_id"], ["rbac_groups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("invite_id", "group_id"),
    )


def downgrade() -> None:
    op.drop_table("invite_rbac_groups")
    op.drop_table("managed_roles")
    op.drop_table("rbac_group_workspace_roles")
    op.drop_table("rbac_group_members")
    op.drop_table("rbac_groups")
    op.drop_table("scim_users")
    op.drop_table("scim_tokens")
