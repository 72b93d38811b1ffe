"""API keys for the data plane: create (an extension), read, list, rename, change status.

The secret (``sk-ant-api03-...``) exists only in the create response; the database keeps its SHA-256.
``archived`` is final: an archived key cannot be changed. A key past ``expires_at`` reads ``expired``
and cannot be reactivated (create a new one).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from orgwarden import ids
from orgwarden.domain import workspaces as rules
from orgwarden.domain.clock import rfc3339, utcnow
from orgwarden.domain.policy import Permission
from orgwarden.domain.statuses import api_key_status
from orgwarden.errors import InvalidRequest, NotFound
from orgwarden.services import audit
from orgwarden.services.access import WorkspaceAccess, workspace_access
from orgwarden.services.context import Context
from orgwarden.services.validation import checked, one_of
from orgwarden.services.workspaces import require_active, require_workspace
from orgwarden.storage.pagination import Cursor, Page
from orgwarden.storage.tables import ApiKey, Workspace
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

KEY_STATUSES = frozenset({"active", "inactive", "archived", "expired"})
SETTABLE_STATUSES = frozenset({"active", "inactive", "archived"})


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    secret: str
    default_workspace_id: str


async def _require(
    uow: UnitOfWork, ctx: Context, key_id: str, permission: Permission = Permission.API_KEYS_READ
) -> ApiKey:
    """The key, if the actor may read it (404 otherwise, as for a key that does not exist), and 403
    if they may read but not hold ``permission`` on it."""
    key = await uow.api_keys.get(ctx.organization_id, key_id)
    if key is None:
        raise NotFound(f"API key {key_id!r} not found")
    access = await workspace_access(uow, ctx)
    if not access.unrestricted:
        workspace = await require_workspace(uow, ctx.organization_id, key.workspace_id)
        if not access.allows(workspace, Permission.API_KEYS_READ):
            raise NotFound(f"API key {key_id!r} not found")
        access.require(workspace, permission)
    return key


async def readable_key(uow: UnitOfWork, ctx: Context, key_id: str) -> ApiKey:
    """An API key the actor may read (404 otherwise): for the use cases of other aggregates."""
    return await _require(uow, ctx, key_id)


class ApiKeyService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def default_workspace_id(self, organization_id: str) -> str:
        async with self._uow() as uow:
            return (await uow.workspaces.default(organization_id)).id

    async def create(
        self, ctx: Context, *, name: str, workspace_id: str | None, expires_at: datetime | None = None
    ) -> CreatedKey:
        clean_name = checked(rules.check_name, name)
        now = utcnow()
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest(f"expires_at: {rfc3339(expires_at)} is in the past")
        if ctx.actor.user_id is None:
            raise InvalidRequest("API keys must be created on behalf of a user")
        secret = ids.new_api_key_secret()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            default = await uow.workspaces.default(ctx.organization_id)
            workspace = default
            if workspace_id is not None:
                workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            (await workspace_access(uow, ctx)).require(workspace, Permission.API_KEYS_WRITE)
            require_active(workspace)
            key = ApiKey(
                id=ids.new_id(ids.API_KEY),
                organization_id=ctx.organization_id,
                workspace_id=workspace.id,
                name=clean_name,
                secret_hash=ids.hash_secret(secret),
                partial_key_hint=ids.partial_hint(secret),
                status="active",
                created_at=now,
                created_by_type="user",
                created_by_id=ctx.actor.user_id,
                expires_at=expires_at,
                archived_at=None,
            )
            uow.api_keys.add(key)
            audit.record(
                uow, ctx, "api_key.create", "api_key", key.id, workspace_id=workspace.id,
                details={"name": clean_name, "expires_at": rfc3339(expires_at)},
            )  # fmt: skip
            await uow.commit()
        return CreatedKey(key, secret, default.id)

    async def get(self, ctx: Context, key_id: str) -> ApiKey:
        async with self._uow() as uow:
            return await _require(uow, ctx, key_id)

    async def list(
        self,
        ctx: Context,
        cursor: Cursor,
        *,
        workspace_id: str | None = None,
        status: str | None = None,
        created_by_user_id: str | None = None,
    ) -> Page[ApiKey]:
        if status is not None:
            one_of(status, KEY_STATUSES, "status")
        async with self._uow() as uow:
            access = await workspace_access(uow, ctx)
            if workspace_id is not None and not access.unrestricted:
                await _readable_workspace(uow, ctx, access, workspace_id)
            return await uow.api_keys.page(
                ctx.organization_id,
                cursor,
                now=utcnow(),
                workspace_id=workspace_id,
                status=status,
                created_by_user_id=created_by_user_id,
                workspace_ids=access.visible_ids(Permission.API_KEYS_READ),
            )

    async def last_used(self, ctx: Context, key_ids: Sequence[str]) -> dict[str, datetime]:
        """When each of ``key_ids`` (keys the caller has just read) was last metered, to the UTC day:
        the start of the last day with ``/v1/messages`` usage in the usage rollups. A key that never
        made a metered request is left out."""
        async with self._uow() as uow:
            return await uow.rollups.last_used_days(ctx.organization_id, key_ids)

    async def creatable_workspaces(self, ctx: Context) -> builtins.list[Workspace]:
        """The active workspaces (the default one first) in which the actor may create keys: what
        ``create`` would accept as ``workspace_id``, for a form to offer."""
        async with self._uow() as uow:
            access = await workspace_access(uow, ctx)
            allowed = access.visible_ids(Permission.API_KEYS_WRITE)
            if allowed is not None and not allowed:
                return []
            found: builtins.list[Workspace] = []
            cursor = Cursor(limit=1000)
            while True:
                page = await uow.workspaces.page(
                    ctx.organization_id, cursor, include_archived=False, include_default=True,
                    ids=sorted(allowed) if allowed is not None else (),
                )  # fmt: skip
                found += page.items
                if not page.has_more or not page.items:
                    break
                cursor = Cursor(after_id=page.items[-1].id, limit=1000)
            return sorted(found, key=lambda ws: (not ws.is_default, ws.name.lower()))

    async def update(self, ctx: Context, key_id: str, *, name: str | None = None, status: str | None = None) -> ApiKey:
        clean_name = checked(rules.check_name, name) if name is not None else None
        if status is not None:
            one_of(status, SETTABLE_STATUSES, "status")
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            key = await _require(uow, ctx, key_id, Permission.API_KEYS_WRITE)
            current = api_key_status(key.status, key.expires_at, now)
            if current == "archived":
                raise InvalidRequest(f"API key {key_id} is archived and cannot be changed")
            if current == "expired" and status in ("active", "inactive"):
                raise InvalidRequest(f"API key {key_id} expired at {rfc3339(key.expires_at)} and cannot be reactivated")
            changes: dict[str, object] = {}
            if clean_name is not None and clean_name != key.name:
                changes["name"] = [key.name, clean_name]
                key.name = clean_name
            if status is not None and status != key.status:
                changes["status"] = [current, status]
                key.status = status
                if status == "archived":
                    key.archived_at = now
            if changes:
                uow.cache_events.changed("api_key", key.id, now)
                audit.record(
                    uow,
                    ctx,
                    "api_key.update",
                    "api_key",
                    key.id,
                    workspace_id=key.workspace_id,
                    details=changes,
                )
            await uow.commit()
            return key


async def _readable_workspace(uow: UnitOfWork, ctx: Context, access: WorkspaceAccess, workspace_id: str) -> None:
    """A ``workspace_id`` filter on the key list: 404 for a workspace the actor cannot see, 403 for
    one whose keys they may not read."""
    workspace = await uow.workspaces.get(ctx.organization_id, workspace_id)
    if workspace is None:
        raise NotFound(f"workspace {workspace_id!r} not found")
    access.require(workspace, Permission.API_KEYS_READ)
