"""Users of the organization: read, change role, remove, deactivate, reactivate.

Rules beyond the spec's "role cannot be admin", decided here and documented in the README:
- the organization always keeps at least one enabled (not deactivated) admin, so the last one can be
  neither demoted, removed nor deactivated; the only member cannot be removed
  (``cannot_remove_last_member``, as Anthropic's SDK knows);
- removing or deactivating a user offboards them (``services.offboarding``): sessions, user tokens
  and admin keys revoked, the API keys they created handled per the organization's
  ``offboarding_key_policy``; removal also deletes their workspace memberships.
"""

from __future__ import annotations

from collections.abc import Sequence

from orgwarden.domain.clock import rfc3339, utcnow
from orgwarden.domain.roles import ASSIGNABLE_ORG_ROLES, ORG_ROLES
from orgwarden.errors import NotFound
from orgwarden.services import audit, offboarding
from orgwarden.services.context import Context
from orgwarden.services.offboarding import ensure_not_last_admin, offboard
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
            await ensure_not_last_admin(uow, user, "demoted")
            before = user.role
            user.role = role
            uow.cache_events.changed("user", user.id, utcnow())  # cached token look-ups carry the role
            audit.record(uow, ctx, "user.update", "user", user.id, details={"role": [before, role]})
            await uow.commit()
            return user

    async def remove(self, ctx: Context, user_id: str) -> str:
        """Remove the user and offboard them (``services.offboarding``): one ``user.remove`` event."""
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            user = await require_user(uow, ctx.organization_id, user_id)
            await offboard(uow, ctx, user, reason="removed")
            await uow.commit()
            return user.id

    async def removal_preview(self, ctx: Context, user_id: str) -> offboarding.Preview:
        """What ``remove`` would revoke right now (``offboarding.preview``): nothing is changed."""
        return await offboarding.preview(self._uow, ctx, user_id, reason="removed")

    async def deactivate(self, ctx: Context, user_id: str) -> User:
        """Deactivate the user (SCIM ``active: false``, or the CLI) and offboard them; the row, the
        memberships and the role stay, so ``reactivate`` gives the same access back. Deactivating a
        deactivated user changes nothing."""
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            user = await require_user(uow, ctx.organization_id, user_id)
            await offboard(uow, ctx, user, reason="deactivated")
            await uow.commit()
            return user

    async def reactivate(self, ctx: Context, user_id: str) -> User:
        """Let a deactivated user act again. What offboarding revoked stays revoked (keys it set to
        inactive can be turned on again by an admin). Reactivating an active user changes nothing."""
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            user = await require_user(uow, ctx.organization_id, user_id)
            if user.deactivated_at is None:
                return user
            since = user.deactivated_at
            user.deactivated_at = None
            audit.record(
                uow, ctx, "user.reactivate", "user", user.id,
                details={"email": user.email, "deactivated_at": rfc3339(since)},
            )  # fmt: skip
            await uow.commit()
            return user
