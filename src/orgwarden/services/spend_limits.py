"""Spend limits: a cap on metered cost, in integer cents, per scope and UTC period.

One limit per scope (the organization, a workspace, a user — every request made with the user's
access tokens — or an API key: the last is an orgwarden extension) and period (``daily``, ``weekly``,
``monthly``); setting again updates it in place, so its id and ``created_at`` survive. ``amount``
null is an explicit "no cap" for that scope and period. Every limit in force on a request's
organization, workspace and key (or user) applies, so the lowest binds.

Every change commits, in one transaction under the organization lock, the row, an audit event and a
``spend_limits`` cache event: every gateway worker and instance polls those and reloads the limits
within a second (``gateway.limits``).

The effective report has one row per API key and period for which some limit resolves (its
"members" are API keys: most traffic is made with keys), then one per user and period for users
who have a user limit (their access tokens' traffic), keys first: every API key id sorts before
every user id, so one cursor (the last id) pages through both.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orgwarden import ids
from orgwarden.domain.clock import utcnow
from orgwarden.domain.limits import CURRENCY, DEFAULT_ALERT_THRESHOLDS, PERIODS, SCOPE_TYPES, period_window
from orgwarden.errors import InvalidRequest, NotFound
from orgwarden.services import audit, cursors
from orgwarden.services.context import Context
from orgwarden.services.cursors import CursorPage
from orgwarden.services.validation import one_of
from orgwarden.services.workspaces import require_active, require_workspace
from orgwarden.storage.tables import SpendLimit, User
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory

MAX_AMOUNT_CENTS = 10**15
MAX_THRESHOLD = 1000
MAX_FILTER_IDS = 100
_AMOUNT = re.compile(r"[0-9]{1,16}")
_SUPPORTED_SCOPES = "orgwarden supports organization, workspace, user and api_key scopes"
_SCOPE_ID_FIELD = {"organization": None, "workspace": "workspace_id", "api_key": "api_key_id", "user": "user_id"}
_SCOPE_ID_FIELDS = ("workspace_id", "api_key_id", "user_id")


@dataclass(frozen=True, slots=True)
class Scope:
    """A scope as sent. ``others`` holds fields of scopes orgwarden does not serve (``seat_tier`` …)
    so that a refusal can name them."""

    type: str
    workspace_id: str | None = None
    api_key_id: str | None = None
    user_id: str | None = None
    others: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EffectiveSpend:
    """One row of the effective report: the limit that binds a key (or a user: ``user`` set,
    ``api_key_id`` "") in a period, and the spend so far of that limit's own scope."""

    api_key_id: str
    period: str
    limit: SpendLimit
    spent_picodollars: int
    user: User | None = None


def parse_amount(amount: str | None) -> int | None:
    """Cents from the wire's decimal string; ``None`` stays "no cap"."""
    if amount is None:
        return None
    if not _AMOUNT.fullmatch(amount) or int(amount) > MAX_AMOUNT_CENTS:
        raise InvalidRequest(
            f"amount: {amount!r} is not a non-negative whole number of cents written as a decimal string "
            f'(e.g. "50000" for $500.00; no sign, no decimals, at most {MAX_AMOUNT_CENTS}), nor null'
        )
    return int(amount)


def check_thresholds(thresholds: Sequence[int]) -> list[int]:
    """Percentages of the amount at which an alert fires: 1 to 1000, each once; stored sorted."""
    for value in thresholds:
        if isinstance(value, bool) or not 1 <= value <= MAX_THRESHOLD:
            raise InvalidRequest(f"alert_thresholds: {value!r} is not a percentage from 1 to {MAX_THRESHOLD}")
    if len(set(thresholds)) != len(thresholds):
        duplicate = next(v for v in thresholds if thresholds.count(v) > 1)
        raise InvalidRequest(f"alert_thresholds: {duplicate} is given more than once")
    return sorted(thresholds)


def check_scope_type(value: str, name: str) -> str:
    if value not in SCOPE_TYPES:
        raise InvalidRequest(f"{name}: {value!r} is not supported: {_SUPPORTED_SCOPES}")
    return value


def check_periods(periods: Sequence[str]) -> list[str]:
    for period in periods:
        one_of(period, frozenset(PERIODS), "period")
    return [p for p in PERIODS if p in periods] if periods else list(PERIODS)


def scope_of(row: SpendLimit) -> Scope:
    if row.scope_type == "workspace":
        return Scope("workspace", workspace_id=row.scope_id)
    if row.scope_type == "api_key":
        return Scope("api_key", api_key_id=row.scope_id)
    if row.scope_type == "user":
        return Scope("user", user_id=row.scope_id)
    return Scope("organization")


def _state(row: SpendLimit) -> dict[str, Any]:
    return {"amount_cents": row.amount_cents, "alert_thresholds": list(row.alert_thresholds)}


def _too_many(name: str, values: Sequence[str]) -> None:
    if len(values) > MAX_FILTER_IDS:
        raise InvalidRequest(f"{name}: at most {MAX_FILTER_IDS} ids, got {len(values)}")


class SpendLimitService:
    def __init__(self, uow: UnitOfWorkFactory, user_thresholds: Sequence[int] | None = None) -> None:
        self._uow = uow
        # A user's limit warns earlier and closer to the wall than the others by default (75/95/100 %:
        # ``ORGWARDEN_USER_SPEND_ALERT_THRESHOLDS``): a developer's own budget runs out mid-task.
        self._user_thresholds = list(user_thresholds) if user_thresholds else list(DEFAULT_ALERT_THRESHOLDS)

    def _defaults(self, scope_type: str) -> list[int]:
        return list(self._user_thresholds) if scope_type == "user" else list(DEFAULT_ALERT_THRESHOLDS)

    async def set(
        self,
        ctx: Context,
        *,
        amount: str | None,
        scope: Scope,
        period: str | None = None,
        alert_thresholds: Sequence[int] | None = None,
    ) -> tuple[SpendLimit, bool]:
        """Create or update the limit of ``scope`` and ``period``; ``True`` when it was created.

        Alert thresholds not given keep their value on an update (the defaults on a create: the
        user defaults for a user's limit)."""
        cents = parse_amount(amount)
        clean_period = one_of(period or "monthly", frozenset(PERIODS), "period")
        thresholds = check_thresholds(alert_thresholds) if alert_thresholds is not None else None
        scope_type = self._check_scope_fields(scope)
        org = ctx.organization_id
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(org)
            scope_id, workspace_id = await self._scope_target(uow, org, scope_type, scope)
            row = await uow.spend_limits.for_scope(org, scope_type, scope_id, clean_period)
            created = row is None
            before = None if row is None else _state(row)
            if row is None:
                row = SpendLimit(
                    id=ids.new_id(ids.SPEND_LIMIT), organization_id=org, scope_type=scope_type, scope_id=scope_id,
                    period=clean_period, amount_cents=cents, currency=CURRENCY,
                    alert_thresholds=thresholds if thresholds is not None else self._defaults(scope_type),
                    created_at=now, updated_at=now,
                )  # fmt: skip
                uow.spend_limits.add(row)
            else:
                row.amount_cents = cents
                if thresholds is not None:
                    row.alert_thresholds = thresholds
                row.updated_at = now
            uow.cache_events.changed("spend_limits", org, now)
            audit.record(
                uow, ctx, "spend_limit.create" if created else "spend_limit.update", "spend_limit", row.id,
                workspace_id=workspace_id,
                details={"scope_type": scope_type, "scope_id": scope_id, "period": clean_period, "before": before,
                         "after": _state(row)},
            )  # fmt: skip
            await uow.commit()
            return row, created

    async def get(self, ctx: Context, spend_limit_id: str) -> SpendLimit:
        async with self._uow() as uow:
            return await self._require(uow, ctx.organization_id, spend_limit_id)

    async def list(
        self,
        ctx: Context,
        *,
        scope_types: Sequence[str] = (),
        workspace_id: str | None = None,
        limit: int = 20,
        page: str | None = None,
    ) -> CursorPage[SpendLimit]:
        """In id order, which is creation order: an update keeps a limit where it was."""
        for value in scope_types:
            check_scope_type(value, "scope_type")
        after = cursors.decode(page)
        async with self._uow() as uow:
            rows = await uow.spend_limits.after(
                ctx.organization_id, after, limit + 1, scope_types=scope_types, workspace_id=workspace_id
            )
        if len(rows) > limit:
            return CursorPage(rows[:limit], cursors.encode(rows[limit - 1].id))
        return CursorPage(rows, None)

    async def delete(self, ctx: Context, spend_limit_id: str) -> SpendLimit:
        org = ctx.organization_id
        now = utcnow()
        async with self._uow() as uow:
            await uow.organizations.lock(org)
            row = await self._require(uow, org, spend_limit_id)
            workspace_id = await self._workspace_of(uow, org, row)
            await uow.spend_limits.delete(row)
            uow.cache_events.changed("spend_limits", org, now)
            audit.record(
                uow, ctx, "spend_limit.delete", "spend_limit", row.id, workspace_id=workspace_id,
                details={"scope_type": row.scope_type, "scope_id": row.scope_id, "period": row.period,
                         "before": _state(row)},
            )  # fmt: skip
            await uow.commit()
            return row

    async def effective(
        self,
        ctx: Context,
        *,
        periods: Sequence[str] = (),
        api_key_ids: Sequence[str] = (),
        user_ids: Sequence[str] = (),
        limit: int = 20,
        page: str | None = None,
    ) -> CursorPage[EffectiveSpend]:
        """One row per (API key, period) for which a limit resolves, then per (user, period) for
        users with a user limit; ``limit`` members per page (a member's rows never split across
        pages).

        The binding limit is the lowest amount among the key's, its workspace's and the
        organization's limits of that period (for a user: the user's and the organization's; a
        user's tokens each name a workspace, whose limits also apply to them); when none has an
        amount, the narrowest (null) one. Its spend is its own scope's, since the start of the
        current period."""
        wanted = check_periods(periods)
        _too_many("api_key_ids", api_key_ids)
        _too_many("user_ids", user_ids)
        after = cursors.decode(page)
        org = ctx.organization_id
        now = utcnow()
        async with self._uow() as uow:
            limits = {
                (row.scope_type, row.scope_id, row.period): row
                for row in await uow.spend_limits.all(org)
                if row.period in wanted
            }
            reach: dict[str, Any] = {}
            if not any(scope_type == "organization" for scope_type, _, _ in limits):
                reach = {
                    "workspace_ids": sorted({i for t, i, _ in limits if t == "workspace"}),
                    "or_ids": sorted({i for t, i, _ in limits if t == "api_key"}),
                }
            keys = []
            if after is None or after < ids.USER:  # past every key: users only
                keys = await uow.api_keys.unarchived_after(
                    org, after, limit + 1, ids=api_key_ids, created_by_user_ids=user_ids, **reach
                )
            users: list[User] = []
            if len(keys) <= limit and not api_key_ids:  # room left on this page: users with a user limit
                limited = sorted({i for t, i, _ in limits if t == "user" and (not user_ids or i in user_ids)})
                wanted_users = [i for i in limited if after is None or i > after][: limit + 1 - len(keys)]
                found_users = {u.id: u for u in await uow.users.by_ids(org, wanted_users)}
                users = [found_users[i] for i in wanted_users if i in found_users]
            members: list[tuple[str, str, User | None]] = [(k.id, k.workspace_id, None) for k in keys]
            members += [(u.id, "", u) for u in users]
            more, members = len(members) > limit, members[:limit]
            bindings: list[tuple[str, str, SpendLimit, User | None]] = []
            for member_id, workspace_id, user in members:
                scopes = [("user", member_id)] if user else [("api_key", member_id), ("workspace", workspace_id)]
                for period in wanted:
                    found = [
                        limits[(scope_type, scope_id, period)]
                        for scope_type, scope_id in (*scopes, ("organization", org))
                        if (scope_type, scope_id, period) in limits
                    ]
                    if not found:
                        continue
                    capped = [row for row in found if row.amount_cents is not None]
                    binding = min(capped, key=lambda row: row.amount_cents or 0) if capped else found[0]
                    bindings.append((member_id, period, binding, user))
            needed = {(b.period, b.scope_type, b.scope_id) for _, _, b, _ in bindings}
            spent = await self._spent(uow, org, needed, now)
        rows = [
            EffectiveSpend("" if user else member_id, period, binding,
                           spent[(period, binding.scope_type, binding.scope_id)], user)
            for member_id, period, binding, user in bindings
        ]  # fmt: skip
        return CursorPage(rows, cursors.encode(members[-1][0]) if more else None)

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    async def _spent(
        uow: UnitOfWork, organization_id: str, needed: AbstractSet[tuple[str, str, str]], now: datetime
    ) -> dict[tuple[str, str, str], int]:
        """Picodollars spent since the start of the current period, per (period, scope type, id):
        one grouped query per period and scope type."""
        groups: dict[tuple[str, str], set[str]] = {}
        for period, scope_type, scope_id in needed:
            groups.setdefault((period, scope_type), set()).add(scope_id)
        spent: dict[tuple[str, str, str], int] = {}
        for (period, scope_type), scope_ids in groups.items():
            start, end = period_window(period, now)
            sums = await uow.rollups.spent(scope_type, sorted(scope_ids), start, end)
            for scope_id in scope_ids:
                spent[(period, scope_type, scope_id)] = sums.get(scope_id, 0)
        return spent

    @staticmethod
    def _check_scope_fields(scope: Scope) -> str:
        scope_type = check_scope_type(scope.type, "scope.type")
        for name, value in scope.others.items():
            if value is not None:
                raise InvalidRequest(f"scope.{name}: not used by a {scope_type} scope; {_SUPPORTED_SCOPES}")
        wanted = _SCOPE_ID_FIELD[scope_type]
        for name in _SCOPE_ID_FIELDS:
            value = getattr(scope, name)
            if name == wanted and value is None:
                raise InvalidRequest(f"scope.{name}: required for a {scope_type} scope")
            if name != wanted and value is not None:
                raise InvalidRequest(f"scope.{name}: not used by a {scope_type} scope")
        return scope_type

    @staticmethod
    async def _scope_target(
        uow: UnitOfWork, organization_id: str, scope_type: str, scope: Scope
    ) -> tuple[str, str | None]:
        """The scope's id and its workspace (for the audit trail); 404 for an unknown workspace or
        key, 400 for an archived one."""
        if scope_type == "organization":
            return organization_id, None
        if scope_type == "workspace":
            assert scope.workspace_id is not None
            workspace = await require_workspace(uow, organization_id, scope.workspace_id)
            require_active(workspace)
            return workspace.id, workspace.id
        if scope_type == "user":
            assert scope.user_id is not None
            user = await uow.users.get(organization_id, scope.user_id)  # removed users are not found
            if user is None:
                raise NotFound(f"user {scope.user_id!r} not found")
            return user.id, None
        assert scope.api_key_id is not None
        key = await uow.api_keys.get(organization_id, scope.api_key_id)
        if key is None:
            raise NotFound(f"API key {scope.api_key_id!r} not found")
        if key.status == "archived":
            raise InvalidRequest(f"API key {key.id} is archived and cannot be changed")
        return key.id, key.workspace_id

    @staticmethod
    async def _workspace_of(uow: UnitOfWork, organization_id: str, row: SpendLimit) -> str | None:
        if row.scope_type == "workspace":
            return row.scope_id
        if row.scope_type == "api_key":
            key = await uow.api_keys.get(organization_id, row.scope_id)
            return key.workspace_id if key else None
        return None

    @staticmethod
    async def _require(uow: UnitOfWork, organization_id: str, spend_limit_id: str) -> SpendLimit:
        row = await uow.spend_limits.get(organization_id, spend_limit_id)
        if row is None:
            raise NotFound(f"spend limit {spend_limit_id!r} not found")
        return row
