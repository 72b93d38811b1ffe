"""The organization itself: first-run bootstrap, ``GET /me`` and its settings (``/me/settings``)."""

from __future__ import annotations

from dataclasses import dataclass

from orgwarden import ids
from orgwarden.domain import workspaces as rules
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Actor
from orgwarden.errors import Conflict, NotFound
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.services.offboarding import KEY_POLICIES
from orgwarden.services.validation import checked, normalize_email, one_of
from orgwarden.storage.tables import AdminApiKey, Organization, User, Workspace
from orgwarden.storage.uow import UnitOfWorkFactory

DEFAULT_WORKSPACE_NAME = "Default"


@dataclass(frozen=True, slots=True)
class Bootstrap:
    organization: Organization
    user: User
    default_workspace: Workspace
    admin_key: AdminApiKey
    admin_key_secret: str


class OrganizationService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def current(self) -> Organization | None:
        """The organization this installation serves, or ``None`` before ``orgwarden init``."""
        async with self._uow() as uow:
            return await uow.organizations.first()

    async def get(self, ctx: Context) -> Organization:
        async with self._uow() as uow:
            org = await uow.organizations.get(ctx.organization_id)
        if org is None:
            raise NotFound(f"organization {ctx.organization_id} does not exist")
        return org

    async def update_settings(self, ctx: Context, *, offboarding_key_policy: str | None = None) -> Organization:
        """Change the organization's settings; ``organization.update`` records what changed."""
        if offboarding_key_policy is not None:
            one_of(offboarding_key_policy, KEY_POLICIES, "offboarding_key_policy")
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)  # offboarding reads the policy under it
            org = await uow.organizations.get(ctx.organization_id)
            if org is None:
                raise NotFound(f"organization {ctx.organization_id} does not exist")
            changes: dict[str, object] = {}
            if offboarding_key_policy is not None and offboarding_key_policy != org.offboarding_key_policy:
                changes["offboarding_key_policy"] = [org.offboarding_key_policy, offboarding_key_policy]
                org.offboarding_key_policy = offboarding_key_policy
            if changes:
                audit.record(uow, ctx, "organization.update", "organization", org.id, details=changes)
                await uow.commit()
            return org

    async def bootstrap(self, *, org_name: str, admin_email: str, admin_name: str) -> Bootstrap:
        """Create the organization, its default workspace, its first admin and one admin key.

        Refuses (409) when the database already holds an organization: one installation serves one
        organization, and running ``init`` twice must change nothing.
        """
        name = checked(rules.check_name, org_name, "org_name")
        email = normalize_email(admin_email, "admin_email")
        user_name = checked(rules.check_name, admin_name, "admin_name")
        now = utcnow()
        async with self._uow() as uow:
            if await uow.organizations.first() is not None:
                raise Conflict(
                    "orgwarden is already initialized (the database holds an organization); nothing was changed"
                )
            org = Organization(id=ids.new_organization_id(), name=name, created_at=now)
            uow.organizations.add(org)
            await uow.flush()
            workspace = Workspace(
                id=ids.new_id(ids.WORKSPACE),
                organization_id=org.id,
                name=DEFAULT_WORKSPACE_NAME,
                is_default=True,
                display_color=rules.PALETTE[0],
                tags={},
                workspace_geo=rules.DEFAULT_WORKSPACE_GEO,
                allowed_inference_geos=rules.UNRESTRICTED,
                default_inference_geo=rules.DEFAULT_INFERENCE_GEO,
                created_at=now,
                archived_at=None,
            )
            user = User(
                id=ids.new_id(ids.USER),
                organization_id=org.id,
                email=email,
                name=user_name,
                role="admin",
                added_at=now,
                removed_at=None,
            )
            uow.workspaces.add(workspace)
            uow.users.add(user)
            await uow.flush()
            secret = ids.new_admin_key_secret()
            key = AdminApiKey(
                id=ids.new_id(ids.API_KEY),
                organization_id=org.id,
                user_id=user.id,
                name="initial admin key",
                secret_hash=ids.hash_secret(secret),
                partial_key_hint=ids.partial_hint(secret),
                status="active",
                created_at=now,
                revoked_at=None,
            )
            uow.admin_keys.add(key)
            ctx = Context(Actor("system", "init", org.id))
            audit.record(uow, ctx, "organization.create", "organization", org.id, details={"name": name})
            audit.record(uow, ctx, "workspace.create", "workspace", workspace.id, workspace_id=workspace.id)
            audit.record(uow, ctx, "user.create", "user", user.id, details={"email": email, "role": "admin"})
            audit.record(uow, ctx, "admin_api_key.create", "admin_api_key", key.id, details={"user_id": user.id})
            await uow.commit()
        return Bootstrap(org, user, workspace, key, secret)
