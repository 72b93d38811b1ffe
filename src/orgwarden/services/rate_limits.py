"""Rate limits: reading and setting limiter values per group, at three levels.

Groups (``domain.limits``) are the catalogue's model families, then the API-surface groups; each has,
per organization, one entry whose id (``rate_limit_id``) is what values are written against. A value
is stored as one ``rate_limit_values`` row per level, group and limiter type; clearing it deletes the
row. Levels: the organization (an orgwarden extension to write: Anthropic sets these itself), a
workspace (the spec's overrides; never the default workspace, as at Anthropic) and an API key (an
extension).

Every change commits, in one transaction under the organization lock, the rows, an audit event
naming the old and new values, and a ``rate_limits`` cache event: every gateway worker and instance
polls those and reloads the limits within a second (``gateway.limits``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orgwarden.domain.catalog import Catalog
from orgwarden.domain.clock import utcnow
from orgwarden.domain.limits import GROUP_TYPES, LIMITER_TYPES, MAX_LIMIT_VALUE, Groups, RateGroup, rate_groups
from orgwarden.domain.policy import Permission
from orgwarden.errors import InvalidRequest, NotFound
from orgwarden.services import audit, cursors
from orgwarden.services.access import require_org, workspace_access
from orgwarden.services.api_keys import readable_key
from orgwarden.services.context import Context
from orgwarden.services.cursors import CursorPage
from orgwarden.services.validation import one_of
from orgwarden.services.workspaces import require_active, require_workspace
from orgwarden.storage.tables import RateLimitValue
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

LEVELS = ("organization", "workspace", "api_key")
DEFAULT_WORKSPACE_REFUSAL = (
    "the default workspace takes no rate-limit overrides (as with Anthropic): set the organization's values instead"
)

ByGroup = dict[str, dict[str, int]]  # group name -> limiter type -> value


@dataclass(frozen=True, slots=True)
class LimitValue:
    """One limiter value as listed: where it comes from, and the organization's for reference."""

    type: str
    value: int
    source: str  # organization | workspace | api_key
    org_limit: int | None


@dataclass(frozen=True, slots=True)
class RateLimitEntry:
    """One group's values at one level (``scope_id``: the organization, workspace or key id)."""

    group: RateGroup
    entry_id: str
    level: str
    scope_id: str
    limits: tuple[LimitValue, ...]


@dataclass(frozen=True, slots=True)
class LimitChange:
    """Set ``type`` to ``value``, or clear it with ``None``."""

    type: str
    value: int | None


def _by_group(rows: Iterable[RateLimitValue]) -> ByGroup:
    found: ByGroup = {}
    for row in rows:
        found.setdefault(row.group_name, {})[row.limiter] = row.value
    return found


def _ordered(values: dict[str, int]) -> list[tuple[str, int]]:
    """Values in ``LIMITER_TYPES`` order, so every listing reads the same way."""
    return [(kind, values[kind]) for kind in LIMITER_TYPES if kind in values]


def check_changes(changes: Sequence[LimitChange]) -> None:
    """Refuse, naming it, an unknown limiter type, a value out of range or a type given twice."""
    if not changes:
        raise InvalidRequest("limits: name at least one limiter type to set or clear")
    seen: set[str] = set()
    for index, change in enumerate(changes):
        if change.type not in LIMITER_TYPES:
            raise InvalidRequest(
                f"limits[{index}].type: {change.type!r} is not a limiter type orgwarden enforces "
                f"({', '.join(LIMITER_TYPES)})"
            )
        if change.type in seen:
            raise InvalidRequest(f"limits[{index}].type: {change.type!r} is given more than once")
        seen.add(change.type)
        if change.value is not None and not 1 <= change.value <= MAX_LIMIT_VALUE:
            raise InvalidRequest(
                f"limits[{index}].value: must be an integer from 1 to {MAX_LIMIT_VALUE} (or null to clear it), "
                f"got {change.value}"
            )


class RateLimitService:
    def __init__(self, uow: UnitOfWorkFactory, catalog: Catalog) -> None:
        self._uow = uow
        self._groups = rate_groups(catalog)

    def groups(self, organization_id: str) -> Groups:
        return Groups(self._groups, organization_id)

    # -- reading ----------------------------------------------------------------------------------

    def _selected(self, group_type: str | None, model: str | None, organization_id: str) -> list[RateGroup]:
        groups = list(self._groups)
        if group_type is not None:
            one_of(group_type, frozenset(GROUP_TYPES), "group_type")
            groups = [g for g in groups if g.type == group_type]
        if model is not None:
            found = self.groups(organization_id).of_model(model)
            if found is None:
                raise NotFound(f"model {model!r} not found: it is in no rate-limit group of this organization")
            groups = [g for g in groups if g is found]
        return groups

    def _page(
        self, organization_id: str, entries: list[RateLimitEntry], limit: int | None, page: str | None
    ) -> CursorPage[RateLimitEntry]:
        order = [g.entry_id(organization_id) for g in self._groups]
        return cursors.window(entries, lambda e: e.entry_id, order, cursors.decode(page), limit)

    async def list_organization(
        self,
        ctx: Context,
        *,
        group_type: str | None = None,
        model: str | None = None,
        limit: int | None = None,
        page: str | None = None,
    ) -> CursorPage[RateLimitEntry]:
        """One entry per group, set values or not (the spec lists every group of the organization)."""
        require_org(ctx, Permission.RATE_LIMITS_READ)
        org = ctx.organization_id
        groups = self._selected(group_type, model, org)
        async with self._uow() as uow:
            values = _by_group(await uow.rate_limits.for_scope(org, "organization", org))
        entries = [self._organization_entry(org, g, values.get(g.name, {})) for g in groups]
        return self._page(org, entries, limit, page)

    async def list_workspace(
        self,
        ctx: Context,
        workspace_id: str,
        *,
        group_type: str | None = None,
        include_inherited: bool = False,
        limit: int | None = None,
        page: str | None = None,
    ) -> CursorPage[RateLimitEntry]:
        """Groups with a workspace override (the spec); with ``include_inherited`` also the groups
        and limiter types that only the organization sets, marked ``source: organization``."""
        org = ctx.organization_id
        groups = self._selected(group_type, None, org)
        async with self._uow() as uow:
            workspace = await require_workspace(uow, org, workspace_id)
            (await workspace_access(uow, ctx)).require(workspace, Permission.RATE_LIMITS_READ)
            own = _by_group(await uow.rate_limits.for_scope(org, "workspace", workspace_id))
            inherited = _by_group(await uow.rate_limits.for_scope(org, "organization", org))
        entries = []
        for group in groups:
            entry = self._workspace_entry(
                org, group, workspace_id, own.get(group.name, {}), inherited.get(group.name, {}), include_inherited
            )
            if entry.limits:
                entries.append(entry)
        return self._page(org, entries, limit, page)

    async def list_api_key(
        self,
        ctx: Context,
        api_key_id: str,
        *,
        group_type: str | None = None,
        limit: int | None = None,
        page: str | None = None,
    ) -> CursorPage[RateLimitEntry]:
        """Extension: the groups for which the key has values of its own."""
        org = ctx.organization_id
        groups = self._selected(group_type, None, org)
        async with self._uow() as uow:
            key = await readable_key(uow, ctx, api_key_id)
            workspace = await require_workspace(uow, org, key.workspace_id)
            (await workspace_access(uow, ctx)).require(workspace, Permission.RATE_LIMITS_READ)
            own = _by_group(await uow.rate_limits.for_scope(org, "api_key", api_key_id))
        entries = [self._api_key_entry(org, g, api_key_id, own[g.name]) for g in groups if own.get(g.name)]
        return self._page(org, entries, limit, page)

    def resolve(self, ctx: Context, reference: str) -> str:
        """The entry id for a group named by its entry id, group id, group name or one of its models
        (what the CLI accepts); 404 naming the reference otherwise."""
        groups = self.groups(ctx.organization_id)
        group = (
            groups.by_entry_id(reference)
            or groups.by_name(reference)
            or next((g for g in groups.all if g.group_id == reference), None)
            or groups.of_model(reference)
        )
        if group is None:
            raise NotFound(f"rate-limit group {reference!r} not found (give a group name, a model or a rate_limit_id)")
        return group.entry_id(ctx.organization_id)

    # -- writing ----------------------------------------------------------------------------------

    async def update(
        self, ctx: Context, level: str, scope_id: str | None, rate_limit_id: str, changes: Sequence[LimitChange]
    ) -> RateLimitEntry:
        """Set or clear values of one group at one level; returns that level's entry for the group.

        ``scope_id`` is the workspace or API key id (ignored for the organization). Limiter types not
        named keep their value. Setting a value it already has changes nothing and records nothing.
        """
        one_of(level, frozenset(LEVELS), "level")
        check_changes(changes)
        org = ctx.organization_id
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(org)
            target, workspace_id = await self._writable_scope(uow, ctx, level, scope_id)
            group = self.groups(org).by_entry_id(rate_limit_id)
            if group is None:
                raise NotFound(f"rate limit {rate_limit_id!r} not found")
            before: dict[str, int | None] = {}
            after: dict[str, int | None] = {}
            for change in changes:
                row = await uow.rate_limits.get(org, level, target, group.name, change.type)
                old = row.value if row is not None else None
                if old == change.value:
                    continue
                before[change.type], after[change.type] = old, change.value
                if row is None:
                    uow.rate_limits.add(
                        RateLimitValue(
                            organization_id=org, scope_type=level, scope_id=target, group_name=group.name,
                            limiter=change.type, value=change.value, updated_at=now,
                        )
                    )  # fmt: skip
                elif change.value is None:
                    await uow.rate_limits.delete(row)
                else:
                    row.value, row.updated_at = change.value, now
            if after:
                uow.cache_events.changed("rate_limits", org, now)
                audit.record(
                    uow, ctx, "rate_limit.update", "rate_limit", rate_limit_id, workspace_id=workspace_id,
                    details={"level": level, "scope_id": target, "group": group.name, "before": before, "after": after},
                )  # fmt: skip
            await uow.flush()
            entry = await self._entry_of(uow, org, level, target, group)
            await uow.commit()
            return entry

    async def _writable_scope(
        self, uow: UnitOfWork, ctx: Context, level: str, scope_id: str | None
    ) -> tuple[str, str | None]:
        """The level's id and the workspace the change concerns (for the audit trail), refusing an
        unknown, default or archived workspace and an unknown or archived key, and an actor whose
        role does not let them change that level's limits (``services.access``)."""
        organization_id = ctx.organization_id
        if level == "organization":
            require_org(ctx, Permission.RATE_LIMITS_WRITE)
            return organization_id, None
        if scope_id is None:
            raise InvalidRequest(f"a {level} id is required to set {level} rate limits")
        access = await workspace_access(uow, ctx)
        if level == "workspace":
            workspace = await require_workspace(uow, organization_id, scope_id)
            access.require(workspace, Permission.RATE_LIMITS_WRITE)
            if workspace.is_default:
                raise InvalidRequest(DEFAULT_WORKSPACE_REFUSAL)
            require_active(workspace)
            return workspace.id, workspace.id
        key = await readable_key(uow, ctx, scope_id)
        access.require(await require_workspace(uow, organization_id, key.workspace_id), Permission.RATE_LIMITS_WRITE)
        if key.status == "archived":
            raise InvalidRequest(f"API key {scope_id} is archived and cannot be changed")
        return key.id, key.workspace_id

    async def _entry_of(
        self, uow: UnitOfWork, organization_id: str, level: str, scope_id: str, group: RateGroup
    ) -> RateLimitEntry:
        own = _by_group(await uow.rate_limits.for_scope(organization_id, level, scope_id)).get(group.name, {})
        if level == "organization":
            return self._organization_entry(organization_id, group, own)
        if level == "workspace":
            org_values = _by_group(await uow.rate_limits.for_scope(organization_id, "organization", organization_id))
            return self._workspace_entry(organization_id, group, scope_id, own, org_values.get(group.name, {}), False)
        return self._api_key_entry(organization_id, group, scope_id, own)

    # -- entries ----------------------------------------------------------------------------------

    @staticmethod
    def _organization_entry(organization_id: str, group: RateGroup, values: dict[str, int]) -> RateLimitEntry:
        limits = tuple(LimitValue(kind, value, "organization", value) for kind, value in _ordered(values))
        return RateLimitEntry(group, group.entry_id(organization_id), "organization", organization_id, limits)

    @staticmethod
    def _workspace_entry(
        organization_id: str,
        group: RateGroup,
        workspace_id: str,
        own: dict[str, int],
        org_values: dict[str, int],
        include_inherited: bool,
    ) -> RateLimitEntry:
        limits = []
        for kind in LIMITER_TYPES:
            if kind in own:
                limits.append(LimitValue(kind, own[kind], "workspace", org_values.get(kind)))
            elif include_inherited and kind in org_values:
                limits.append(LimitValue(kind, org_values[kind], "organization", org_values[kind]))
        return RateLimitEntry(group, group.entry_id(organization_id), "workspace", workspace_id, tuple(limits))

    @staticmethod
    def _api_key_entry(organization_id: str, group: RateGroup, key_id: str, own: dict[str, int]) -> RateLimitEntry:
        limits = tuple(LimitValue(kind, value, "api_key", None) for kind, value in _ordered(own))
        return RateLimitEntry(group, group.entry_id(organization_id), "api_key", key_id, limits)
