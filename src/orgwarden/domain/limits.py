"""Rate-limit groups, limiter types, spend periods, and which limits apply to a request.

Rate limits are set per *group*: a family of models (the catalogue's ``group`` field, e.g. every
Opus 4.x shares ``claude-opus-4``) or one of the API-surface groups of the spec. Each group has, per
organization, one *entry* whose id (``rate_limit_id``) is what the workspace and API-key overrides
are written against. Both ids are derived, not stored: the group id is the same in every
organization, the entry id differs between organizations, and neither changes across restarts.

Levels, from widest: organization, workspace, API key. Each level that sets a value gets a bucket
of its own, and a request must fit in all of them, so the lowest value in force binds (a workspace
override above the organization's value changes nothing). The default workspace takes no override,
as with Anthropic.

Spend limits cap the cost metered in a UTC period (day, ISO week from Monday, calendar month) for
one scope: the organization, a workspace, an API key or a user (every request made with the user's
access tokens). Amounts are integer minor units (cents). A request made with a user access token has
no API key (its ``key_id`` is ""): it counts for its organization, workspace and user.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orgwarden.domain.buckets import Limiter
from orgwarden.domain.catalog import Catalog

MODEL_GROUP = "model_group"
SURFACE_GROUPS = ("batch", "token_count", "files", "skills", "web_search")
GROUP_TYPES = (MODEL_GROUP, *SURFACE_GROUPS)
_SURFACE_NAMES = {
    "batch": "Message Batches",
    "token_count": "Token counting",
    "files": "Files API",
    "skills": "Skills",
    "web_search": "Web search",
}
LIMITER_TYPES = tuple(limiter.value for limiter in Limiter)
TOKEN_LIMITERS = frozenset(
    {Limiter.INPUT_TOKENS_PER_MINUTE, Limiter.INPUT_TOKENS_PER_MINUTE_CACHE_AWARE, Limiter.OUTPUT_TOKENS_PER_MINUTE}
)
MAX_LIMIT_VALUE = 10**12

SCOPE_TYPES = ("organization", "workspace", "api_key", "user")
PERIODS = ("daily", "weekly", "monthly")
CURRENCY = "USD"
PICODOLLARS_PER_CENT = 10**10
DEFAULT_ALERT_THRESHOLDS = (50, 80, 100)


def _digest(*parts: str, length: int = 24) -> str:
    raw = hashlib.sha256("\x00".join(parts).encode()).digest()
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    number = int.from_bytes(raw, "big")
    chars = []
    for _ in range(length):
        number, rem = divmod(number, len(alphabet))
        chars.append(alphabet[rem])
    return "".join(chars)


@dataclass(frozen=True, slots=True)
class RateGroup:
    """One rate-limit group. ``name`` is the key stored with limit values (a catalogue group, or
    the surface type); ``models`` lists ids and aliases for model groups, ``None`` otherwise."""

    name: str
    type: str
    display_name: str
    models: tuple[str, ...] | None

    @property
    def group_id(self) -> str:
        return "rlg_" + _digest("group", self.name)

    def entry_id(self, organization_id: str) -> str:
        return "rl_" + _digest("entry", organization_id, self.name)


def _display_name(group: str) -> str:
    """``claude-opus-4`` -> ``Claude Opus 4.x``."""
    words = group.split("-")
    shown = [w.capitalize() if not w[:1].isdigit() else w for w in words]
    if shown and shown[-1][:1].isdigit() and "." not in shown[-1]:
        shown[-1] += ".x"
    return " ".join(shown)


def rate_groups(catalog: Catalog) -> tuple[RateGroup, ...]:
    """Every group: the catalogue's model groups in file order, then the surface groups."""
    members: dict[str, list[str]] = {}
    for model in catalog.models:
        members.setdefault(model.group, []).extend((model.id, *model.aliases))
    groups = [RateGroup(name, MODEL_GROUP, _display_name(name), tuple(models)) for name, models in members.items()]
    groups.extend(RateGroup(kind, kind, _SURFACE_NAMES[kind], None) for kind in SURFACE_GROUPS)
    return tuple(groups)


@dataclass(frozen=True, slots=True)
class Groups:
    """The groups, indexed by name, by model name and by entry id (entry ids need the org)."""

    all: tuple[RateGroup, ...]
    organization_id: str

    def by_name(self, name: str) -> RateGroup | None:
        return next((g for g in self.all if g.name == name), None)

    def by_entry_id(self, entry_id: str) -> RateGroup | None:
        return next((g for g in self.all if g.entry_id(self.organization_id) == entry_id), None)

    def of_model(self, model: str) -> RateGroup | None:
        return next((g for g in self.all if g.models is not None and model in g.models), None)


# -- which values apply -----------------------------------------------------------------------

Values = Mapping[str, Mapping[str, int]]  # group name -> limiter type -> value


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Every rate-limit value set, by level (organizations, workspaces and keys by id)."""

    organizations: Mapping[str, Values]
    workspaces: Mapping[str, Values]
    api_keys: Mapping[str, Values]

    def buckets_for(
        self, organization_id: str, workspace_id: str, default_workspace: bool, key_id: str, group: str
    ) -> list[tuple[str, Limiter, int]]:
        """``(bucket name, limiter, value)`` for every value in force for a request of ``group``.
        Names hold the level's id, so one store can serve several organizations."""
        found: list[tuple[str, Limiter, int]] = []
        levels: list[tuple[str, Values]] = [(f"rl:org:{organization_id}", self.organizations.get(organization_id, {}))]
        if not default_workspace and workspace_id in self.workspaces:
            levels.append((f"rl:ws:{workspace_id}", self.workspaces[workspace_id]))
        if key_id in self.api_keys:
            levels.append((f"rl:key:{key_id}", self.api_keys[key_id]))
        for prefix, values in levels:
            for limiter_type, value in values.get(group, {}).items():
                found.append((f"{prefix}:{group}:{limiter_type}", Limiter(limiter_type), value))
        return found


EMPTY_RATE_LIMITS = RateLimitConfig({}, {}, {})


# -- spend ------------------------------------------------------------------------------------


def period_window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC period containing ``now``: ``[start, end)``."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day, day + timedelta(days=1)
    if period == "weekly":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "monthly":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return start, end
    raise ValueError(f"unknown period {period!r}")


@dataclass(frozen=True, slots=True)
class SpendRule:
    """An enforced spend limit (amount set, not null)."""

    id: str
    scope_type: str  # organization | workspace | api_key | user
    scope_id: str  # the organization, workspace, API key or user id
    period: str
    amount_cents: int
    thresholds: tuple[int, ...]

    @property
    def amount_picodollars(self) -> int:
        return self.amount_cents * PICODOLLARS_PER_CENT

    def counter(self, now: datetime) -> str:
        """The name of the spend counter this rule reads: scope, period and the period's start
        (a counter is shared by every rule of the same scope and period, and starts empty)."""
        start, _ = period_window(self.period, now)
        return f"spend:{self.scope_type}:{self.scope_id}:{self.period}:{start:%Y%m%d}"


@dataclass(frozen=True, slots=True)
class SpendConfig:
    rules: tuple[SpendRule, ...]

    def rules_for(
        self, organization_id: str, workspace_id: str, key_id: str, user_id: str | None = None
    ) -> list[SpendRule]:
        wanted = set(_scopes(organization_id, workspace_id, key_id, user_id))
        return [rule for rule in self.rules if (rule.scope_type, rule.scope_id) in wanted]


EMPTY_SPEND = SpendConfig(())


def _scopes(organization_id: str, workspace_id: str, key_id: str, user_id: str | None) -> list[tuple[str, str]]:
    """The spend scopes a request counts for: its organization and workspace, its API key (none for a
    user access token: ``key_id`` "") and its user (a user access token's)."""
    scopes = [("organization", organization_id), ("workspace", workspace_id)]
    if key_id:
        scopes.append(("api_key", key_id))
    if user_id:
        scopes.append(("user", user_id))
    return scopes


def counters_of(
    organization_id: str, workspace_id: str, key_id: str, now: datetime, user_id: str | None = None
) -> Iterable[str]:
    """Every spend counter a request's cost goes into, whether or not a rule reads it yet."""
    for scope_type, scope_id in _scopes(organization_id, workspace_id, key_id, user_id):
        for period in PERIODS:
            start, _ = period_window(period, now)
            yield f"spend:{scope_type}:{scope_id}:{period}:{start:%Y%m%d}"


def parse_counter(name: str) -> tuple[str, str, str, datetime]:
    """``(scope_type, scope_id, period, start)`` of a counter name."""
    _, scope_type, scope_id, period, start = name.split(":")
    return scope_type, scope_id, period, datetime.strptime(start, "%Y%m%d").replace(tzinfo=UTC)
