"""Admin API keys (``sk-ant-admin01-...``): created and revoked with the CLI, used on the Admin API.

Each belongs to an admin user, whose removal revokes it. ``authenticate`` is the Admin API's door:
one indexed look-up by the secret's SHA-256, then a constant-time comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

from orgwarden import ids
from orgwarden.domain import workspaces as rules
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Actor
from orgwarden.errors import AuthenticationFailed, InvalidRequest, NotFound, PermissionDenied
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.services.users import require_user
from orgwarden.services.validation import checked
from orgwarden.storage.tables import AdminApiKey
from orgwarden.storage.uow import UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class CreatedAdminKey:
    key: AdminApiKey
    secret: str


class AdminKeyService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def create(self, ctx: Context, *, name: str, user_id: str | None = None) -> CreatedAdminKey:
        clean_name = checked(rules.check_name, name)
        owner_id = user_id or ctx.actor.user_id
        if owner_id is None:
            raise InvalidRequest("an admin key must belong to a user")
        secret = ids.new_admin_key_secret()
        async with self._uow() as uow:
            owner = await require_user(uow, ctx.organization_id, owner_id)
            if owner.role != "admin":
                raise InvalidRequest(f"user {owner.id} is not an organization admin and cannot own an admin key")
            if owner.deactivated_at is not None:
                raise InvalidRequest(f"user {owner.id} is deactivated and cannot own an admin key")
            key = AdminApiKey(
                id=ids.new_id(ids.API_KEY),
                organization_id=ctx.organization_id,
                user_id=owner.id,
                name=clean_name,
                secret_hash=ids.hash_secret(secret),
                partial_key_hint=ids.partial_hint(secret),
                status="active",
                created_at=utcnow(),
                revoked_at=None,
            )
            uow.admin_keys.add(key)
            audit.record(
                uow,
                ctx,
                "admin_api_key.create",
                "admin_api_key",
                key.id,
                details={"name": clean_name, "user_id": owner.id},
            )
            await uow.commit()
        return CreatedAdminKey(key, secret)

    async def list(self, ctx: Context) -> list[AdminApiKey]:
        async with self._uow() as uow:
            return await uow.admin_keys.all(ctx.organization_id)

    async def revoke(self, ctx: Context, key_id: str) -> AdminApiKey:
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)  # same lock order as removing the key's user
            key = await uow.admin_keys.get(ctx.organization_id, key_id)
            if key is None:
                raise NotFound(f"admin API key {key_id!r} not found")
            if key.status != "revoked":
                key.status, key.revoked_at = "revoked", utcnow()
                uow.cache_events.changed("admin_api_key", key.id, key.revoked_at)
                audit.record(uow, ctx, "admin_api_key.revoke", "admin_api_key", key.id)
            await uow.commit()
            return key

    async def authenticate(self, secret: str) -> Actor:
        """The actor behind an Admin API credential, or 401/403 naming what is wrong with it."""
        digest = ids.hash_secret(secret)
        async with self._uow() as uow:
            if secret.startswith(ids.ADMIN_KEY_PREFIX):
                key = await uow.admin_keys.by_secret_hash(digest)
                if key is None or not ids.secret_matches(secret, key.secret_hash):
                    raise AuthenticationFailed("invalid x-api-key")
                if key.status != "active":
                    raise AuthenticationFailed("this admin API key has been revoked")
                return Actor("admin_api_key", key.id, key.organization_id, key.user_id)
            api_key = await uow.api_keys.by_secret_hash(digest)
            if api_key is not None and ids.secret_matches(secret, api_key.secret_hash):
                raise PermissionDenied(
                    "API keys cannot use the Admin API; authenticate with an admin API key (sk-ant-admin01-...)"
                )
            raise AuthenticationFailed("invalid x-api-key")
