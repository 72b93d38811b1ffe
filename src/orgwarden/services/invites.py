"""Invites: create, read, list, delete, and accept (an extension: the Console does this by hand).

A new invite carries a single-use token, returned once (inside ``accept_url``) and stored hashed.
Invites expire ``invite_ttl_days`` (21) after creation; the ``expired`` status is derived from the
clock (``domain.statuses``). Deleting sets ``deleted`` and keeps the row; deleting again is a no-op;
an accepted invite cannot be deleted (the user exists: remove the user instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from orgwarden import ids
from orgwarden.domain import workspaces as rules
from orgwarden.domain.clock import rfc3339, utcnow
from orgwarden.domain.policy import Actor
from orgwarden.domain.roles import ASSIGNABLE_ORG_ROLES, ORG_ROLES
from orgwarden.domain.statuses import invite_status
from orgwarden.errors import Conflict, InvalidRequest, NotFound
from orgwarden.identity import groups as group_roles
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.services.validation import checked, normalize_email, one_of
from orgwarden.storage.pagination import Cursor, Page
from orgwarden.storage.tables import Invite, InviteRbacGroup, User
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

INVITE_STATUSES = frozenset({"pending", "accepted", "expired", "deleted"})


@dataclass(frozen=True, slots=True)
class CreatedInvite:
    invite: Invite
    token: str


async def _require(uow: UnitOfWork, organization_id: str, invite_id: str) -> Invite:
    invite = await uow.invites.get(organization_id, invite_id)
    if invite is None:
        raise NotFound(f"invite {invite_id!r} not found")
    return invite


class InviteService:
    def __init__(self, uow: UnitOfWorkFactory, *, ttl_days: int) -> None:
        self._uow = uow
        self._ttl = timedelta(days=ttl_days)

    async def create(self, ctx: Context, *, email: str, role: str, rbac_group_ids: Sequence[str] = ()) -> CreatedInvite:
        address = normalize_email(email)
        one_of(role, ASSIGNABLE_ORG_ROLES, "role", refused="admin")
        if len(rbac_group_ids) > 100:
            raise InvalidRequest("rbac_group_ids: at most 100 groups")
        group_ids = sorted(set(rbac_group_ids))
        now = utcnow()
        token = ids.new_token()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            member = await uow.users.by_email(ctx.organization_id, address)
            if member is not None:
                raise InvalidRequest(
                    f"{address} is already a member of the organization (user {member.id})",
                    error_code="already_member",
                )
            pending = await uow.invites.pending_for(ctx.organization_id, address, now)
            if pending is not None:
                raise InvalidRequest(
                    f"a pending invite for {address} already exists ({pending.id})",
                    error_code="invite_already_exists",
                )
            invite = Invite(
                id=ids.new_id(ids.INVITE),
                organization_id=ctx.organization_id,
                email=address,
                role=role,
                status="pending",
                token_hash=ids.hash_secret(token),
                invited_at=now,
                expires_at=now + self._ttl,
                accepted_at=None,
                invited_by=ctx.actor.user_id,
                user_id=None,
            )
            uow.invites.add(invite)
            if group_ids:  # the groups the user joins on acceptance (``rbac_group_ids``)
                known = {g.id for g in await uow.rbac_groups.find(ctx.organization_id, ids=group_ids)}
                for group_id in group_ids:
                    if group_id not in known:
                        raise NotFound(f"RBAC group {group_id!r} not found", error_code="rbac_group_not_found")
                await uow.flush()
                for group_id in group_ids:
                    uow.rbac_groups.add(InviteRbacGroup(invite_id=invite.id, group_id=group_id))
            details: dict[str, object] = {"email": address, "role": role}
            if group_ids:  # named only when the invite has groups
                details["rbac_group_ids"] = group_ids
            audit.record(uow, ctx, "invite.create", "invite", invite.id, details=details)
            await uow.commit()
        return CreatedInvite(invite, token)

    async def group_ids(self, invite_ids: Sequence[str]) -> dict[str, list[str]]:
        """The ``rbac_group_ids`` of each invite (those with none are left out)."""
        async with self._uow() as uow:
            return await uow.rbac_groups.for_invites(invite_ids)

    async def get(self, ctx: Context, invite_id: str) -> Invite:
        async with self._uow() as uow:
            return await _require(uow, ctx.organization_id, invite_id)

    async def list(
        self,
        ctx: Context,
        cursor: Cursor,
        *,
        email: str | None = None,
        roles: Sequence[str] = (),
        statuses: Sequence[str] = (),
    ) -> Page[Invite]:
        for role in roles:
            one_of(role, ORG_ROLES, "roles")
        for status in statuses:
            one_of(status, INVITE_STATUSES, "statuses")
        address = normalize_email(email) if email is not None else None
        async with self._uow() as uow:
            return await uow.invites.page(
                ctx.organization_id, cursor, now=utcnow(), email=address, roles=roles, statuses=statuses
            )

    async def delete(self, ctx: Context, invite_id: str) -> str:
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            invite = await _require(uow, ctx.organization_id, invite_id)
            if invite.status == "accepted":
                raise Conflict(f"invite {invite_id} was accepted and cannot be deleted; remove the user instead")
            if invite.status == "deleted":
                return invite.id
            was = invite_status(invite.status, invite.expires_at, utcnow())
            invite.status = "deleted"
            audit.record(uow, ctx, "invite.delete", "invite", invite.id, details={"email": invite.email, "was": was})
            await uow.commit()
            return invite.id

    async def accept(self, *, token: str, name: str, request_id: str | None, source_ip: str | None) -> User:
        """Turn a pending invite into a user with the invite's role; the token alone authenticates."""
        user_name = checked(rules.check_name, name, "name")
        now = utcnow()
        async with self._uow() as uow:
            invite = await uow.invites.by_token_hash(ids.hash_secret(token))
            if invite is None or not ids.secret_matches(token, invite.token_hash):
                raise NotFound("invite token not recognised")
            await uow.organizations.lock(invite.organization_id)
            await uow.invites.reload(invite)  # a racing accept or delete committed before the lock is seen
            status = invite_status(invite.status, invite.expires_at, now)
            if status == "accepted":
                raise Conflict(f"invite {invite.id} has already been accepted")
            if status == "deleted":
                raise InvalidRequest(f"invite {invite.id} was deleted; ask an admin for a new one")
            if status == "expired":
                raise InvalidRequest(f"invite {invite.id} expired at {rfc3339(invite.expires_at)}")
            existing = await uow.users.by_email(invite.organization_id, invite.email)
            if existing is not None:
                raise InvalidRequest(
                    f"{invite.email} is already a member of the organization (user {existing.id})",
                    error_code="already_member",
                )
            user = User(
                id=ids.new_id(ids.USER),
                organization_id=invite.organization_id,
                email=invite.email,
                name=user_name,
                role=invite.role,
                added_at=now,
                removed_at=None,
            )
            uow.users.add(user)
            invite.status, invite.accepted_at, invite.user_id = "accepted", now, user.id
            joined = await group_roles.join_invite_groups(uow, invite.id, user, now)
            ctx = Context(Actor("invite_token", invite.id, invite.organization_id, user.id), request_id, source_ip)
            audit.record(
                uow,
                ctx,
                "invite.accept",
                "user",
                user.id,
                details={"invite_id": invite.id, "role": invite.role, **joined},
            )
            await uow.commit()
            return user
