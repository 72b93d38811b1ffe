"""Claude Code policies per group: managed settings and model access (``domain.cc_policy``).

Served as Anthropic's Claude Code Managed Settings Admin API (the SDK's
``beta.organization.claude_code.managed_settings``): the configuration (mode and the order of RBAC
groups), the default settings (the base policy) and each RBAC group's settings. orgwarden extends each
policy, the default included, with ``allowed_models`` / ``denied_models`` and each group's policy with
``email_domains`` (fields the SDK sends through ``extra_body``).

Every change commits, with its audit event, a ``cc_policies`` cache event; a user's group membership
changing commits a ``user_groups`` event (``identity.groups.recompute``). ``invalidate`` (wired to the
data plane's cache-event poll) drops what they touch, so ``effective_for_user`` and
``for_organization`` answer from memory on the hot path, and see a change within a second.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from orgwarden.domain.cc_policy import (
    MODES,
    EffectivePolicy,
    OrganizationPolicies,
    PolicyRule,
    canonical_json,
    model_list,
)
from orgwarden.domain.clock import utcnow
from orgwarden.errors import Conflict, InvalidRequest, NotFound
from orgwarden.services import audit
from orgwarden.services.context import Context
from orgwarden.storage.tables import CcPolicy, CcPolicyConfig
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

MAX_SETTINGS_BYTES = 1024 * 1024  # as Anthropic's: 1 MiB as stored (canonical JSON)
MAX_POLICIES = 100  # groups in the order (``rbac_group_order_limit_exceeded`` beyond)
MAX_MODELS = 200
MAX_MODEL_ID = 128
MAX_DOMAINS = 100
MAX_GROUP_ID = 64
MAX_AGE = 60.0  # seconds a cached answer is trusted even if no invalidation arrives
MAX_ENTRIES = 100_000
DEFAULT_MODE = "rbac_groups"
_DOMAIN = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]*")
UNSET: Any = object()


@cache
def settings_keys() -> frozenset[str]:
    """The top-level keys of Claude Code's settings (``data/claude_code_settings_keys.json``)."""
    text = resources.files("orgwarden.data").joinpath("claude_code_settings_keys.json").read_text()
    return frozenset(json.loads(text)["keys"])


def check_settings(value: object, field: str = "settings") -> dict[str, Any]:
    """A managed-settings document: a JSON object of known Claude Code settings, at most 1 MiB."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"{field}: must be a JSON object of Claude Code settings")
    known = settings_keys()
    for key in value:
        if key not in known:
            shown = key if len(key) <= 100 else key[:100] + "…"
            raise InvalidRequest(f"{field}: unknown top-level key {shown!r}: not a Claude Code setting")
    if len(canonical_json(value).encode()) > MAX_SETTINGS_BYTES:
        raise InvalidRequest(f"{field}: the document is over 1 MiB as stored")
    return value


def check_models(value: object, field: str) -> list[str] | None:
    """A model list (``None`` stays None: no list); exact ids or aliases, deduplicated, in order."""
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_MODELS:
        raise InvalidRequest(f"{field}: must be a list of at most {MAX_MODELS} model ids, or null")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or len(item) > MAX_MODEL_ID or not _MODEL.fullmatch(item):
            raise InvalidRequest(f"{field}: {str(item)[:MAX_MODEL_ID]!r} is not a model id")
        if item not in out:
            out.append(item)
    return out


def check_domains(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_DOMAINS:
        raise InvalidRequest(f"email_domains: must be a list of at most {MAX_DOMAINS} domains")
    out: list[str] = []
    for item in value:
        clean = item.strip().lower().removeprefix("@") if isinstance(item, str) else ""
        if not _DOMAIN.fullmatch(clean):
            raise InvalidRequest(f"email_domains: {str(item)[:253]!r} is not a domain name")
        if clean not in out:
            out.append(clean)
    return out


@dataclass(frozen=True, slots=True)
class Configuration:
    mode: str
    mode_updated_at: datetime | None
    order: list[str]
    order_version: str


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    row: CcPolicy
    status: str  # active | deleted


@dataclass(slots=True)
class _Cached:
    value: Any
    expires: float


def _version(config: CcPolicyConfig | None) -> str:
    return f"v{config.order_version if config is not None else 0}"


class CcPolicyService:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow
        self._orgs: dict[str, _Cached] = {}
        self._users: dict[tuple[str, str], _Cached] = {}
        self._users_of_org: dict[str, set[tuple[str, str]]] = {}
        self._keys_of_user: dict[str, set[tuple[str, str]]] = {}
        self._generation = 0

    # --- resolution (cached) -----------------------------------------------------------------

    async def effective_for_user(self, organization_id: str, user_id: str) -> EffectivePolicy:
        """The merged managed settings and model grant of one user: a dict look-up once cached."""
        key = (organization_id, user_id)
        now = time.monotonic()
        hit = self._users.get(key)
        if hit is not None and hit.expires > now:
            return hit.value  # type: ignore[no-any-return]
        generation = self._generation
        policies = await self._policies(organization_id)
        async with self._uow() as uow:
            user = await uow.users.get(organization_id, user_id)
            groups = [group.id for _, group in await uow.rbac_groups.groups_of(user_id)] if user else []
        policy = policies.resolve(groups, user.email if user is not None else None)
        if generation == self._generation:
            if len(self._users) >= MAX_ENTRIES:
                self._clear()
            self._users[key] = _Cached(policy, now + MAX_AGE)
            self._users_of_org.setdefault(organization_id, set()).add(key)
            self._keys_of_user.setdefault(user_id, set()).add(key)
        return policy

    async def for_organization(self, organization_id: str) -> EffectivePolicy:
        """The base policy: what every API key of the organization gets (orgwarden's decision)."""
        return (await self._policies(organization_id)).base_policy()

    async def _policies(self, organization_id: str) -> OrganizationPolicies:
        now = time.monotonic()
        hit = self._orgs.get(organization_id)
        if hit is not None and hit.expires > now:
            return hit.value  # type: ignore[no-any-return]
        generation = self._generation
        async with self._uow() as uow:
            config = await uow.cc_policies.config(organization_id)
            rows = await uow.cc_policies.ordered(organization_id)
        policies = _compile(config, rows)
        if generation == self._generation:
            self._orgs[organization_id] = _Cached(policies, now + MAX_AGE)
        return policies

    def invalidate(self, entity_type: str, entity_id: str) -> None:
        """A cache event: ``cc_policies`` (an organization's policies), ``user`` / ``user_groups``."""
        if entity_type == "cc_policies":
            self._generation += 1
            self._orgs.pop(entity_id, None)
            for key in self._users_of_org.pop(entity_id, set()):
                self._users.pop(key, None)
        elif entity_type in ("user", "user_groups"):
            self._generation += 1
            for key in self._keys_of_user.pop(entity_id, set()):
                self._users.pop(key, None)
        elif entity_type == "organization":
            self._generation += 1
            self._clear()

    def _clear(self) -> None:
        self._orgs.clear()
        self._users.clear()
        self._users_of_org.clear()
        self._keys_of_user.clear()

    # --- the Admin API -----------------------------------------------------------------------

    async def configuration(self, ctx: Context) -> Configuration:
        async with self._uow() as uow:
            config = await uow.cc_policies.config(ctx.organization_id)
            rows = await uow.cc_policies.ordered(ctx.organization_id)
        return _configuration(config, rows)

    async def update_configuration(
        self, ctx: Context, *, mode: str | None, order: Sequence[str] | None, order_version: str | None
    ) -> Configuration:
        if (order is None) != (order_version is None):
            raise InvalidRequest("rbac_group_order and rbac_group_order_version must be sent together")
        if mode is not None and mode not in MODES:
            raise InvalidRequest(f"mode.type: must be one of {', '.join(MODES)}")
        org = ctx.organization_id
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(org)
            config = await self._config_row(uow, org)
            rows = await uow.cc_policies.ordered(org)
            before = _configuration(config, rows)
            if order is not None:
                if order_version != _version(config):
                    raise Conflict(
                        "rbac_group_order_version is not the current version: the order changed since that"
                        " read; read the configuration again and retry"
                    )
                current = [row.rbac_group_id for row in rows]
                if len(set(order)) != len(order) or sorted(order) != sorted(current):
                    raise InvalidRequest(
                        "rbac_group_order: must list every RBAC group that has settings, each once"
                        f" (currently {', '.join(current) or 'none'})"
                    )
                if list(order) != current:
                    by_id = {row.rbac_group_id: row for row in rows}
                    for position, group_id in enumerate(order):
                        by_id[group_id].position = position
                        by_id[group_id].updated_at = now
                    config.order_version += 1
            if mode is not None and mode != config.mode:
                config.mode = mode
                config.mode_updated_at = now
            after = _configuration(config, sorted(rows, key=lambda r: r.position))
            uow.cache_events.changed("cc_policies", org, now)
            audit.record(
                uow, ctx, "claude_code_managed_settings.configuration_update", "organization", org,
                details={"before": _config_details(before), "after": _config_details(after)},
            )  # fmt: skip
            await uow.commit()
        return after

    async def default(self, ctx: Context) -> CcPolicyConfig | None:
        async with self._uow() as uow:
            return await uow.cc_policies.config(ctx.organization_id)

    async def set_default(
        self, ctx: Context, *, settings: object, allowed_models: object = UNSET, denied_models: object = UNSET
    ) -> CcPolicyConfig:
        """Replace (or with ``None`` clear) the default settings; what is not sent (``UNSET``: the
        settings too, from the CLI) is kept."""
        document = settings if settings is None or settings is UNSET else check_settings(settings)
        allowed: Any = UNSET if allowed_models is UNSET else check_models(allowed_models, "allowed_models")
        denied: Any = UNSET if denied_models is UNSET else (check_models(denied_models, "denied_models") or [])
        org = ctx.organization_id
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(org)
            config = await self._config_row(uow, org)
            before = _default_details(config)
            if document is not UNSET:
                config.default_settings = document
                config.default_updated_at = None if document is None else now
            if allowed is not UNSET:
                config.default_allowed_models = allowed
            if denied is not UNSET:
                config.default_denied_models = denied
            uow.cache_events.changed("cc_policies", org, now)
            audit.record(
                uow, ctx, "claude_code_managed_settings.default_update", "organization", org,
                details={"before": before, "after": _default_details(config)},
            )  # fmt: skip
            await uow.commit()
            return config

    async def list_groups(self, ctx: Context, *, limit: int, page: str | None) -> tuple[list[GroupPolicy], str | None]:
        """A page of the order, highest precedence first; ``page`` is the last group id of the previous
        page (409 if it is no longer in the order: list again from the first page)."""
        async with self._uow() as uow:
            rows = await uow.cc_policies.ordered(ctx.organization_id)
            active = await self._active_groups(uow, ctx.organization_id, [r.rbac_group_id for r in rows])
        start = 0
        if page:
            ids_ = [r.rbac_group_id for r in rows]
            if page not in ids_:
                raise Conflict("the RBAC group order changed between pages: list again from the first page")
            start = ids_.index(page) + 1
        chunk = rows[start : start + limit]
        items = [GroupPolicy(r, "active" if r.rbac_group_id in active else "deleted") for r in chunk]
        more = start + limit < len(rows)
        return items, (chunk[-1].rbac_group_id if more and chunk else None)

    async def get(self, ctx: Context, rbac_group_id: str) -> GroupPolicy:
        async with self._uow() as uow:
            row = await _require(uow, ctx.organization_id, rbac_group_id)
            active = await self._active_groups(uow, ctx.organization_id, [rbac_group_id])
        return GroupPolicy(row, "active" if active else "deleted")

    async def set_group(
        self,
        ctx: Context,
        rbac_group_id: str,
        *,
        settings: object,
        email_domains: object = UNSET,
        allowed_models: object = UNSET,
        denied_models: object = UNSET,
    ) -> GroupPolicy:
        """Create or replace a group's policy; a new one joins the end of the order. What is not sent
        (``UNSET``: the settings too, from the CLI) is kept on a replace."""
        document = settings if settings is UNSET else check_settings(settings)
        domains: Any = UNSET if email_domains is UNSET else check_domains(email_domains)
        allowed: Any = UNSET if allowed_models is UNSET else check_models(allowed_models, "allowed_models")
        denied: Any = UNSET if denied_models is UNSET else (check_models(denied_models, "denied_models") or [])
        org = ctx.organization_id
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(org)
            group = await uow.rbac_groups.get(org, rbac_group_id[:MAX_GROUP_ID])
            if group is None or len(rbac_group_id) > MAX_GROUP_ID:
                raise NotFound(f"RBAC group {rbac_group_id[:MAX_GROUP_ID]!r} not found")
            config = await self._config_row(uow, org)
            rows = await uow.cc_policies.ordered(org)
            row = next((r for r in rows if r.rbac_group_id == rbac_group_id), None)
            created = row is None
            before = None if row is None else _policy_details(row)
            if row is None:
                if document is UNSET:
                    raise InvalidRequest("settings: required for a group that has no policy yet")
                if len(rows) >= MAX_POLICIES:
                    raise InvalidRequest(
                        f"the RBAC group order already has {MAX_POLICIES} groups, the most allowed:"
                        " delete another group's settings first",
                        error_code="rbac_group_order_limit_exceeded",
                    )
                row = CcPolicy(
                    organization_id=org, rbac_group_id=rbac_group_id, position=len(rows), settings=document,
                    email_domains=[], allowed_models=None, denied_models=[], created_at=now, updated_at=now,
                )  # fmt: skip
                uow.cc_policies.add(row)
                config.order_version += 1
            else:
                if document is not UNSET and row.settings != document:
                    row.created_at = now  # a different document: its "first stored" time
                    row.settings = document
                row.updated_at = now
            if domains is not UNSET:
                row.email_domains = domains
            if allowed is not UNSET:
                row.allowed_models = allowed
            if denied is not UNSET:
                row.denied_models = denied
            uow.cache_events.changed("cc_policies", org, now)
            audit.record(
                uow, ctx,
                "claude_code_managed_settings.rbac_group_create" if created else
                "claude_code_managed_settings.rbac_group_update",
                "rbac_group", rbac_group_id, details={"before": before, "after": _policy_details(row)},
            )  # fmt: skip
            await uow.commit()
            return GroupPolicy(row, "active")

    async def delete(self, ctx: Context, rbac_group_id: str) -> str:
        org = ctx.organization_id
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(org)
            row = await _require(uow, org, rbac_group_id)
            config = await self._config_row(uow, org)
            details = _policy_details(row)
            await uow.cc_policies.delete(row)
            for position, other in enumerate(r for r in await uow.cc_policies.ordered(org) if r is not row):
                other.position = position
            config.order_version += 1
            uow.cache_events.changed("cc_policies", org, now)
            audit.record(
                uow, ctx, "claude_code_managed_settings.rbac_group_delete", "rbac_group", rbac_group_id,
                details={"before": details},
            )  # fmt: skip
            await uow.commit()
        return rbac_group_id

    @staticmethod
    async def _config_row(uow: UnitOfWork, organization_id: str) -> CcPolicyConfig:
        config = await uow.cc_policies.config(organization_id)
        if config is None:
            config = CcPolicyConfig(
                organization_id=organization_id, mode=DEFAULT_MODE, mode_updated_at=None, order_version=0,
                default_settings=None, default_allowed_models=None, default_denied_models=[],
                default_updated_at=None,
            )  # fmt: skip
            uow.cc_policies.add(config)
        return config

    @staticmethod
    async def _active_groups(uow: UnitOfWork, organization_id: str, group_ids: Sequence[str]) -> set[str]:
        if not group_ids:
            return set()
        return {g.id for g in await uow.rbac_groups.find(organization_id, ids=list(group_ids))}


async def _require(uow: UnitOfWork, organization_id: str, rbac_group_id: str) -> CcPolicy:
    row = None if len(rbac_group_id) > MAX_GROUP_ID else await uow.cc_policies.get(organization_id, rbac_group_id)
    if row is None:
        raise NotFound(
            f"RBAC group {rbac_group_id[:MAX_GROUP_ID]!r} has no Claude Code managed settings",
            error_code="rbac_group_managed_settings_not_found",
        )
    return row


def _compile(config: CcPolicyConfig | None, rows: Sequence[CcPolicy]) -> OrganizationPolicies:
    if config is None:
        return OrganizationPolicies(mode=DEFAULT_MODE)
    base = PolicyRule(
        None,
        config.default_settings,
        model_list(config.default_allowed_models),
        frozenset(config.default_denied_models or ()),
    )
    rules = tuple(
        PolicyRule(
            r.rbac_group_id, r.settings, model_list(r.allowed_models), frozenset(r.denied_models or ()),
            frozenset(r.email_domains or ()),
        )
        for r in sorted(rows, key=lambda r: r.position)
    )  # fmt: skip
    return OrganizationPolicies(mode=config.mode, base=base, rules=rules)


def _configuration(config: CcPolicyConfig | None, rows: Sequence[CcPolicy]) -> Configuration:
    return Configuration(
        mode=config.mode if config is not None else DEFAULT_MODE,
        mode_updated_at=config.mode_updated_at if config is not None else None,
        order=[r.rbac_group_id for r in rows],
        order_version=_version(config),
    )


def _config_details(c: Configuration) -> dict[str, Any]:
    return {"mode": c.mode, "rbac_group_order": c.order}


def _default_details(config: CcPolicyConfig) -> dict[str, Any]:
    return {
        "settings_keys": sorted(config.default_settings) if config.default_settings is not None else None,
        "allowed_models": config.default_allowed_models,
        "denied_models": config.default_denied_models,
    }


def _policy_details(row: CcPolicy) -> dict[str, Any]:
    return {
        "settings_keys": sorted(row.settings),
        "email_domains": row.email_domains,
        "allowed_models": row.allowed_models,
        "denied_models": row.denied_models,
        "position": row.position,
    }
