"""Workspaces: create, read, list, update, archive.

Decisions where the spec is silent (README, "Workspaces"): names are unique, case-insensitively,
among the organization's active workspaces (409 otherwise); updating tags merges, and a tag set to
null is deleted; archiving is idempotent, archives every API key of the workspace, and the default
workspace cannot be archived; an archived workspace cannot be changed. Customer-managed keys
(``external_key_id``) and user profiles are not supported: a non-null value is refused with 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orgwarden import ids
from orgwarden.crypto import SecretBox
from orgwarden.domain import workspaces as rules
from orgwarden.domain.clock import utcnow
from orgwarden.domain.policy import Permission
from orgwarden.errors import Conflict, InvalidRequest, NotFound
from orgwarden.services import audit
from orgwarden.services.access import workspace_access
from orgwarden.services.context import Context
from orgwarden.services.validation import checked
from orgwarden.storage.pagination import Cursor, Page
from orgwarden.storage.tables import Workspace
from orgwarden.storage.tunnels import archive_tunnel
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class Residency:
    """A data-residency change as sent; ``None`` fields were not sent."""

    workspace_geo: str | None = None
    allowed_inference_geos: list[str] | str | None = None
    default_inference_geo: str | None = None


async def require_workspace(uow: UnitOfWork, organization_id: str, workspace_id: str) -> Workspace:
    workspace = await uow.workspaces.get(organization_id, workspace_id)
    if workspace is None:
        raise NotFound(f"workspace {workspace_id!r} not found")
    return workspace


def require_active(workspace: Workspace) -> None:
    if workspace.archived_at is not None:
        raise InvalidRequest(f"workspace {workspace.id} is archived and cannot be changed")


def _unsupported(external_key_id: str | None, user_profile_id: str | None) -> None:
    if external_key_id is not None:
        raise InvalidRequest("external_key_id: customer-managed encryption keys are not supported by orgwarden")
    if user_profile_id is not None:
        raise InvalidRequest("user_profile_id: user profiles are not supported by orgwarden")


class WorkspaceService:
    def __init__(self, uow: UnitOfWorkFactory, box: SecretBox) -> None:
        self._uow = uow
        self._box = box

    async def create(
        self,
        ctx: Context,
        *,
        name: str,
        residency: Residency | None = None,
        tags: Mapping[str, str] | None = None,
        display_color: str | None = None,
        external_key_id: str | None = None,
        user_profile_id: str | None = None,
    ) -> Workspace:
        clean_name = checked(rules.check_name, name)
        clean_tags = checked(rules.check_tags, tags or {})
        color = checked(rules.check_color, display_color) if display_color is not None else rules.random_color()
        _unsupported(external_key_id, user_profile_id)
        residency = residency or Residency()
        geo = checked(rules.check_workspace_geo, residency.workspace_geo or rules.DEFAULT_WORKSPACE_GEO)
        allowed = checked(
            rules.check_allowed_geos,
            residency.allowed_inference_geos if residency.allowed_inference_geos is not None else rules.UNRESTRICTED,
        )
        default = checked(rules.check_inference_geo, residency.default_inference_geo or rules.DEFAULT_INFERENCE_GEO)
        checked(rules.check_default_in_allowed, default, allowed)
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            await self._name_free(uow, ctx.organization_id, clean_name)
            workspace = Workspace(
                id=ids.new_id(ids.WORKSPACE),
                organization_id=ctx.organization_id,
                name=clean_name,
                is_default=False,
                display_color=color,
                tags=clean_tags,
                workspace_geo=geo,
                allowed_inference_geos=allowed,
                default_inference_geo=default,
                created_at=utcnow(),
                archived_at=None,
            )
            uow.workspaces.add(workspace)
            audit.record(
                uow, ctx, "workspace.create", "workspace", workspace.id, workspace_id=workspace.id,
                details={"name": clean_name},
            )  # fmt: skip
            await uow.commit()
            return workspace

    async def get(self, ctx: Context, workspace_id: str) -> Workspace:
        async with self._uow() as uow:
            workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            (await workspace_access(uow, ctx)).require(workspace, Permission.WORKSPACES_READ)
            return workspace

    async def permissions(self, ctx: Context, workspace_id: str) -> frozenset[Permission]:
        """What the actor may do in one workspace (the policy, with their role there): the console
        offers only the forms that would pass. The actions still check for themselves."""
        async with self._uow() as uow:
            workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            access = await workspace_access(uow, ctx)
            access.require(workspace, Permission.WORKSPACES_READ)
            return frozenset(permission for permission in Permission if access.allows(workspace, permission))

    async def list(
        self,
        ctx: Context,
        cursor: Cursor,
        *,
        include_archived: bool = False,
        include_default: bool = False,
        ids_filter: Sequence[str] = (),
    ) -> Page[Workspace]:
        if len(ids_filter) > 100:
            raise InvalidRequest(f"ids: at most 100 workspace ids, got {len(ids_filter)}")
        async with self._uow() as uow:
            visible = (await workspace_access(uow, ctx)).visible_ids(Permission.WORKSPACES_READ)
            if visible is not None:  # a user sees the workspaces they have a role in, and only those
                ids_filter = [ws for ws in (ids_filter or sorted(visible)) if ws in visible]
                if not ids_filter:
                    return Page([], False)
            return await uow.workspaces.page(
                ctx.organization_id,
                cursor,
                include_archived=include_archived,
                include_default=include_default,
                ids=ids_filter,
            )

    async def update(
        self,
        ctx: Context,
        workspace_id: str,
        *,
        name: str | None = None,
        residency: Residency | None = None,
        tags: Mapping[str, str | None] | None = None,
        display_color: str | None = None,
        external_key_id: str | None = None,
        user_profile_id: str | None = None,
    ) -> Workspace:
        _unsupported(external_key_id, user_profile_id)
        changes: dict[str, Any] = {}
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            (await workspace_access(uow, ctx)).require(workspace, Permission.WORKSPACES_WRITE)
            require_active(workspace)
            if name is not None:
                clean = checked(rules.check_name, name)
                if clean.lower() != workspace.name.lower():
                    await self._name_free(uow, ctx.organization_id, clean)
                changes["name"] = clean
            if display_color is not None:
                changes["display_color"] = checked(rules.check_color, display_color)
            if tags is not None:
                changes["tags"] = checked(rules.merge_tags, workspace.tags, tags)
            if residency is not None:
                if residency.workspace_geo is not None:
                    raise InvalidRequest("data_residency.workspace_geo: is immutable after the workspace is created")
                allowed = workspace.allowed_inference_geos
                default = workspace.default_inference_geo
                if residency.allowed_inference_geos is not None:
                    allowed = checked(rules.check_allowed_geos, residency.allowed_inference_geos)
                    changes["allowed_inference_geos"] = allowed
                if residency.default_inference_geo is not None:
                    default = checked(rules.check_inference_geo, residency.default_inference_geo)
                    changes["default_inference_geo"] = default
                checked(rules.check_default_in_allowed, default, allowed)
            changes = {field: value for field, value in changes.items() if getattr(workspace, field) != value}
            before = {field: getattr(workspace, field) for field in changes}
            for field, value in changes.items():
                setattr(workspace, field, value)
            if changes:
                uow.cache_events.changed("workspace", workspace.id, utcnow())
                audit.record(
                    uow, ctx, "workspace.update", "workspace", workspace.id, workspace_id=workspace.id,
                    details={"before": before, "after": changes},
                )  # fmt: skip
            await uow.commit()
            return workspace

    async def archive(self, ctx: Context, workspace_id: str) -> Workspace:
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            if workspace.is_default:
                raise InvalidRequest("the default workspace cannot be archived")
            if workspace.archived_at is not None:
                return workspace
            workspace.archived_at = now
            uow.cache_events.changed("workspace", workspace.id, now)
            archived_keys = await uow.api_keys.archive_in_workspace(workspace.id, now)
            archived_tunnels = []  # its MCP tunnels go with it, as each tunnel's own archive would
            for tunnel in await uow.tunnels.live_in_workspace(workspace.id):
                await archive_tunnel(tunnel, uow.tunnel_certificates, now)
                archived_tunnels.append(tunnel.id)
            audit.record(
                uow, ctx, "workspace.archive", "workspace", workspace.id, workspace_id=workspace.id,
                details={"archived_api_keys": archived_keys, "archived_tunnels": archived_tunnels},
            )  # fmt: skip
            await uow.commit()
            return workspace

    async def set_upstream_key(self, ctx: Context, workspace_id: str, api_key: str | None) -> Workspace:
        """Set (or, with ``None``, clear) the workspace's own upstream API key, stored encrypted.

        Write-only: no interface ever returns it; the audit event records only its hint."""
        if api_key is not None and (not api_key.strip() or len(api_key) > 256 or any(c.isspace() for c in api_key)):
            raise InvalidRequest("api_key: must be a non-empty key of at most 256 characters without spaces")
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(ctx.organization_id)
            workspace = await require_workspace(uow, ctx.organization_id, workspace_id)
            (await workspace_access(uow, ctx)).require(workspace, Permission.WORKSPACES_WRITE)
            require_active(workspace)
            workspace.upstream_api_key_encrypted = self._box.seal(api_key, workspace.id) if api_key else None
            uow.cache_events.changed("workspace", workspace.id, now)
            hint = ids.partial_hint(api_key) if api_key else None
            action = "workspace.upstream_key.set" if api_key else "workspace.upstream_key.clear"
            audit.record(uow, ctx, action, "workspace", workspace.id, workspace_id=workspace.id, details={"hint": hint})
            await uow.commit()
            return workspace

    @staticmethod
    async def _name_free(uow: UnitOfWork, organization_id: str, name: str) -> None:
        clash = await uow.workspaces.active_by_name(organization_id, name)
        if clash is not None:
            raise Conflict(f"a workspace named {clash.name!r} already exists ({clash.id})")
