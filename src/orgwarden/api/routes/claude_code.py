"""The Claude Code usage report (spec: "Get Claude Code Usage Report"), from Claude Code's telemetry.

``starting_at`` is one UTC day (``YYYY-MM-DD``); records are paged with ``limit`` and the opaque
``page`` / ``next_page``. The record's shape is the spec's; ``date`` is written as the spec's example
writes it (RFC 3339 at midnight UTC), and ``estimated_cost.amount`` is cents as a JSON number,
rounded to a hundredth of a cent (``domain.claude_code.cents``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import Request
from starlette.responses import Response

from orgwarden.api.params import QueryParams
from orgwarden.api.routing import AdminRouter, context, ok, services
from orgwarden.domain.claude_code import REPORTED_TOOLS, USER_ACTOR, cents
from orgwarden.domain.policy import Permission
from orgwarden.services.claude_code import DailyRecord

routes = AdminRouter()


@routes.route("GET", "/v1/organizations/usage_report/claude_code", permission=Permission.USAGE_READ)
async def claude_code_report(request: Request) -> Response:
    q = QueryParams(request)
    ctx = context(request)
    result = await services(request).claude_code.report(
        ctx, q.string("starting_at"), q.integer("limit", default=20, low=1, high=1000), q.string("page")
    )
    data = [record(item, ctx.organization_id) for item in result.items]
    return ok({"data": data, "has_more": result.next_page is not None, "next_page": result.next_page})


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def record(item: DailyRecord, organization_id: str) -> dict[str, Any]:
    actor: dict[str, str | None]
    if item.actor.type == USER_ACTOR:
        actor = {"email_address": item.actor.id, "type": USER_ACTOR}
    else:
        actor = {"api_key_name": item.api_key_name, "type": item.actor.type}
    tools = {name: {"accepted": 0, "rejected": 0} for name in REPORTED_TOOLS}
    for name, (accepted, rejected) in sorted(item.tools.items()):
        tools[name] = {"accepted": accepted, "rejected": rejected}
    return {
        "actor": actor,
        "core_metrics": {
            "commits_by_claude_code": item.commits,
            "lines_of_code": {"added": item.lines_added, "removed": item.lines_removed},
            "num_sessions": item.sessions,
            "pull_requests_by_claude_code": item.pull_requests,
        },
        "customer_type": "api",  # orgwarden's users reach Claude through API keys, not a subscription
        "date": f"{item.day.isoformat()}T00:00:00Z",
        "model_breakdown": [
            {
                "estimated_cost": {"amount": _number(cents(usage.cost_picodollars)), "currency": "USD"},
                "model": usage.model,
                "tokens": {
                    "cache_creation": usage.cache_creation_tokens,
                    "cache_read": usage.cache_read_tokens,
                    "input": usage.input_tokens,
                    "output": usage.output_tokens,
                },
            }
            for usage in item.models
        ],
        "organization_id": organization_id,
        "terminal_type": item.terminal_type,
        "tool_actions": tools,
        "subscription_type": None,
    }
