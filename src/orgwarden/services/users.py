"""Users of the organization: read, change role, remove.

Rules beyond the spec's "role cannot be admin", decided here and documented in the README:
- the organization always keeps at least one admin, so the last admin can be neither demoted nor
  removed; the only member cannot be removed (``cannot_remove_last_member``, as Anthropic's SDK knows);
- removing a user deletes their workspace memberships and revokes their admin keys (offboarding
  should not leave a way back in); API keys they created stay, since they belong to workspaces.
"""

from __future__ import annotations

from collections.abc import Sequence

from orgwarden.domain.clock import utcnow
from orgwarden.domain.roles import ASSIGNABLE_ORG_ROLES, ORG_ROLES
from orgwarden.errors import InvalidRequest, NotFound
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.services.validation import normalize_email, one_of
from orgwarden.storage.pagination import Cursor, Page
from orgwarden.storage.tables import User
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory


async def require_user(uow: UnitOfWork, organization_id: str, user_id: str) -> User:
    user = await uow.users.get(organization_id, user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} not found")
    return user


class UserService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def first_admin(self, organization_id: str) -> User | None:
        """The longest-standing admin: the CLI acts on their behalf (see ``cli.runtime``)."""
        async with self._uow() as uow:
            return await uow.users.first_admin(organization_id)

    async def get(self, ctx: Context, user_id: str) -> User:
        async with self._uow() as uow:
            return await require_user(uow, ctx.organization_id, user_id)

    async def list(
        self, ctx: Context, cursor: Cursor, *, email: str | None = None, roles: Sequence[str] = ()
    ) -> Page[User]:
        for role in roles:
            one_of(role, ORG_ROLES, "roles")
        wanted = normalize_email(email) if email is not None else None
        async with self._uow() as uow:
            return await uow.users.page(ctx.organization_id, cursor, email=wanted, roles=roles)

    async def update_role(self, ctx: Context, user_id: str, role: str) -> User:
        one_of(role, ASSIGNABLE_ORG_ROLES, "role", refused="admin")
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            user = await require_user(uow, ctx.organization_id, user_id)
            if user.role == role:
                return user
            if user.role == "admin" and await uow.users.count(ctx.organization_id, role="admin") == 1:
                raise InvalidRequest(f"user {user_id} is the organization's last admin; their role cannot change")
            before = user.role
            user.role = role
            audit.record(uow, ctx, "user.update", "user", user.id, details={"role": [before, role]})
            await uow.commit()
            return user

    async def remove(self, ctx: Context, user_id: str) -> str:
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            user = await require_user(uow, ctx.organization_id, user_id)
            if await uow.users.count(ctx.organization_id) == 1:
                raise InvalidRequest(
                    f"user {user_id} is the organization's only member and cannot be removed",
                    error_code="cannot_remove_last_member",
                )
            if user.role == "admin" and await uow.users.count(ctx.organization_id, role="admin") == 1:
                raise InvalidRequest(f"user {user_id} is the organization's last admin and cannot be removed")
            user.removed_at = now
            uow.cache_events.changed("user", user.id, now)  # their access tokens, on every gateway
            memberships = await uow.members.delete_for_user(user.id)
            revoked = await uow.admin_keys.active_for_user(user.id)
            for key in revoked:
                key.status, key.revoked_at = "revoked", now
                uow.cache_events.changed("admin_api_key", key.id, now)
            audit.record(
                uow,
                ctx,
                "user.remove",
                "user",
                user.id,
                details={
                    "email": user.email,
                    "workspaces": [m.workspace_id for m in memberships],
                    "revoked_admin_api_keys": [k.id for k in revoked],
                },
            )
            await uow.commit()
            return user.id
