"""Request bodies of the rate-limit and spend-limit endpoints (strict, unknown fields refused).

Values are checked by the services, so that the Admin API and the CLI refuse the same things with
the same messages; these models only fix the shapes. A spend-limit scope also accepts the fields of
Anthropic's scopes that orgwarden does not serve (``seat_tier``, ``rbac_group_id`` …), so that the refusal
names the scope type instead of an "unknown field".
"""

from __future__ import annotations

from orgwarden.api.schemas import Body


class LimitIn(Body):
    type: str
    value: int | None


class SetRateLimits(Body):
    limits: list[LimitIn]


class SpendScopeIn(Body):
    type: str
    workspace_id: str | None = None
    api_key_id: str | None = None
    user_id: str | None = None
    seat_tier: str | None = None
    rbac_group_id: str | None = None
    service: str | None = None

    def others(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in ("seat_tier", "rbac_group_id", "service")}


class SetSpendLimit(Body):
    amount: str | None
    scope: SpendScopeIn
    period: str | None = None
    alert_thresholds: list[int] | None = None
