"""The SDK 2.17 analytics methods against a real server (SQLite and PostgreSQL), over simulator traffic
from API keys and from a user's access token: every figure equals the spec's usage and cost reports',
every row validates against the SDK's own types, unserved paths and bad parameters are clear refusals.

One server and one round of traffic per backend (the module's ``traffic`` fixture)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from anthropic.types.beta.organization import (
    BetaAnalyticsCostReportTimeBucket,
    BetaAnalyticsCostUsersItem,
    BetaAnalyticsSingleDayActivitySummary,
    BetaAnalyticsUsageReportTimeBucket,
    BetaAnalyticsUsageUsersItem,
    BetaAnalyticsUserActivity,
)
from anthropic.types.beta.organization.analytics import BetaAnalyticsCostItem, BetaAnalyticsUsageItem
from pydantic import BaseModel

from tests.attrib.test_user_tokens_data_plane import ask, new_team
from tests.conftest import Server, unique

SONNET, HAIKU = "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"
USAGE, COST = "/v1/organizations/usage_report/messages", "/v1/organizations/cost_report"
TOKENS = ("uncached_input_tokens", "output_tokens", "cache_read_input_tokens")


@dataclass
class Traffic:
    server: Server
    today: datetime
    user_id: str
    user_email: str
    key_id: str


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def spec(server: Server, path: str, params: dict[str, Any]) -> dict[str, Any]:
    result = server.client().get(path, cast_to=object, options={"params": params})
    assert isinstance(result, dict)
    return result


def valid(model: type[BaseModel], item: Any) -> None:
    """The row as the server sent it passes the SDK type's own validation (not only its lenient parse)."""
    model.model_validate(item.to_dict(mode="json", exclude_unset=True))


@pytest.fixture(scope="module")
def traffic(server: Server) -> Traffic:
    with server.http() as http:
        key = http.post("/v1/organizations/api_keys", json={"name": unique("an")}).json()
        for model, text in ((SONNET, "Hello"), (HAIKU, "A longer question " * 10)):
            body = {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": text}]}
            sent = http.post("/v1/messages", json=body, headers={"x-api-key": key["key"]})
            assert sent.status_code == 200, sent.text
    team = new_team(server)
    for _ in range(2):
        assert ask(server.base_url, team.token).status_code == 200
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    deadline = time.monotonic() + 60  # the recorder writes every 0.2 s; the machine may be busy
    while True:
        rows = spec(server, USAGE, {"starting_at": iso(today), "group_by": ["account_id"]})["data"][0]["results"]
        if len(rows) == 2 and all(r["output_tokens"] for r in rows):
            requests = spec(server, "/v1/organizations/analytics/usage", {"starting_at": iso(today)})
            if requests["data"] and requests["data"][0]["usage"]["requests"] >= 4:
                break
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)
    return Traffic(server, today, team.user["id"], team.user["email"], key["id"])


def analytics(traffic: Traffic) -> Any:
    return traffic.server.client().beta.organization.analytics


def test_the_bucketed_usage_report_equals_the_spec_usage_report(traffic: Traffic) -> None:
    page = analytics(traffic).usage_report.list(starting_at=iso(traffic.today), group_by=["model", "inference_geo"])
    (bucket,) = page.data
    valid(BetaAnalyticsUsageReportTimeBucket, bucket)
    ours = spec(traffic.server, USAGE, {"starting_at": iso(traffic.today), "group_by": ["model"]})
    by_model = {r["model"]: r for r in ours["data"][0]["results"]}
    assert {r.model for r in bucket.results} == set(by_model)
    for row in bucket.results:
        assert row.inference_geo is None  # not_available: the SDK's null
        assert row.product is None
        assert row.rbac_group_id is None
        for name in TOKENS:
            assert getattr(row, name) == by_model[row.model][name]
        assert row.requests
        assert row.requests > 0
    assert page.has_more is False
    assert page.next_page is None


def test_the_bucketed_cost_report_splits_into_token_types_and_adds_up(traffic: Traffic) -> None:
    cost_report = analytics(traffic).cost_report
    whole = cost_report.list(starting_at=iso(traffic.today)).data[0].results
    split = cost_report.list(starting_at=iso(traffic.today), group_by=["token_type", "cost_type"]).data[0]
    valid(BetaAnalyticsCostReportTimeBucket, split)
    ours = spec(traffic.server, COST, {"starting_at": iso(traffic.today)})["data"][0]["results"]
    (line,) = whole
    assert Decimal(line.amount) == Decimal(ours[0]["amount"]) > 0
    assert line.list_amount == line.amount
    assert line.currency == "USD"
    assert sum(Decimal(r.amount) for r in split.results) == Decimal(line.amount)
    assert {r.cost_type for r in split.results} == {"tokens"}
    assert {"uncached_input_tokens", "output_tokens"} <= {r.token_type for r in split.results}
    assert all(r.requests is None for r in split.results)


def test_usage_by_actor_names_the_user_and_the_key(traffic: Traffic) -> None:
    page = analytics(traffic).usage.list(starting_at=iso(traffic.today), group_by=["actor", "workspace_id"])
    for item in page.data:
        valid(BetaAnalyticsUsageItem, item)
    actors = {(i.group.actor.type, getattr(i.group.actor, "user_id", None) or i.group.actor.api_key_id): i
              for i in page.data}  # fmt: skip
    user = actors[("user_actor", traffic.user_id)]
    assert user.group.actor.email_address == traffic.user_email
    assert user.group.actor.deleted is False
    key = actors[("api_actor", traffic.key_id)]
    assert key.group.workspace_id is not None
    assert key.group.workspace_id.startswith("wrkspc_")
    ours = spec(traffic.server, USAGE, {"starting_at": iso(traffic.today), "group_by": ["account_id", "api_key_id"]})
    by_actor = {r["account_id"] or r["api_key_id"]: r for r in ours["data"][0]["results"]}
    for actor_id, item in ((traffic.user_id, user), (traffic.key_id, key)):
        for name in TOKENS:
            assert getattr(item.usage, name) == by_actor[actor_id][name]
    assert user.usage.requests == 2
    totals = [i.usage.total_tokens for i in page.data]
    assert totals == sorted(totals, reverse=True)  # order_by total_tokens, desc


def test_cost_pages_with_the_cursor_and_orders_by_amount(traffic: Traffic) -> None:
    cost = analytics(traffic).cost
    start, end = iso(traffic.today), iso(traffic.today + timedelta(days=1))
    everything = cost.list(starting_at=start, ending_at=end, group_by=["model", "product"], time_bucket_width="1d")
    for item in everything.data:
        valid(BetaAnalyticsCostItem, item)
        assert item.group.product == "messages_api"
        assert item.starting_at == traffic.today
    paged = list(cost.list(starting_at=start, ending_at=end, group_by=["model", "product"], time_bucket_width="1d",
                           limit=1))  # fmt: skip
    assert [i.to_dict() for i in paged] == [i.to_dict() for i in everything.data]
    amounts = [Decimal(i.cost.amount) for i in everything.data]
    assert amounts == sorted(amounts, reverse=True)
    assert len(amounts) == 2
    spent = spec(traffic.server, COST, {"starting_at": start})["data"][0]["results"][0]["amount"]
    assert sum(amounts) == Decimal(spent)
    batch_only = cost.list(starting_at=start, products=["message_batches_api"])
    assert batch_only.data == []


def test_the_per_user_reports_hold_only_users_traffic(traffic: Traffic) -> None:
    start = iso(traffic.today)
    usage = analytics(traffic).user_usage_report.list(starting_at=start)
    (row,) = usage.data
    valid(BetaAnalyticsUsageUsersItem, row)
    assert row.actor.user_id == traffic.user_id
    assert row.actor.email_address == traffic.user_email
    assert row.starting_at is None
    assert row.requests == 2
    ours = spec(traffic.server, USAGE, {"starting_at": start, "account_ids": [traffic.user_id]})
    for name in TOKENS:
        assert getattr(row, name) == ours["data"][0]["results"][0][name]
    cost = analytics(traffic).user_cost_report.list(starting_at=start, group_by=["token_type"])
    for item in cost.data:
        valid(BetaAnalyticsCostUsersItem, item)
    spent = spec(traffic.server, COST, {"starting_at": start, "account_ids": [traffic.user_id]})
    assert sum(Decimal(i.amount) for i in cost.data) == Decimal(spent["data"][0]["results"][0]["amount"])
    nobody = analytics(traffic).user_usage_report.list(starting_at=start, user_ids=["user_01nobody"])
    assert nobody.data == []


def test_summaries_and_users_count_the_user_who_used_a_token(traffic: Traffic) -> None:
    today = traffic.today.date()
    for client in (traffic.server.client().organization.analytics, analytics(traffic)):
        (yesterday,) = client.summaries.list(starting_date=today - timedelta(days=1)).data  # ending_date: today
        valid(BetaAnalyticsSingleDayActivitySummary, yesterday)
        (day,) = client.summaries.list(starting_date=today, ending_date=today + timedelta(days=1)).data
        assert day.starting_at == traffic.today
        assert day.daily_active_user_count == day.weekly_active_user_count == day.monthly_active_user_count == 1
        assert day.assigned_seat_count is not None
        assert day.assigned_seat_count >= 2
        assert day.daily_adoption_rate == round(100 / day.assigned_seat_count, 2)
    users = analytics(traffic).users.list(date=today.isoformat(), filter=[f"user_id:{traffic.user_id}"])
    (row,) = users.data
    valid(BetaAnalyticsUserActivity, row)
    assert row.user is not None
    assert row.user.email_address == traffic.user_email
    assert row.claude_code_metrics.tool_actions.write_tool.accepted_count == 0
    members = list(traffic.server.client().organization.analytics.users.list(date=today.isoformat(), limit=1))
    assert traffic.user_email in {m.user.email_address for m in members if m.user}


def test_paths_orgwarden_has_no_data_for_are_404s_naming_them(traffic: Traffic) -> None:
    beta = analytics(traffic)
    for resource, path in ((beta.skills, "skills"), (beta.artifacts, "artifacts"), (beta.projects, "projects")):
        with pytest.raises(anthropic.NotFoundError) as refused:
            resource.list(date="2026-01-01")
        assert f"/v1/organizations/analytics/{path}: orgwarden records no" in refused.value.message


@pytest.mark.parametrize(
    ("method", "params", "names"),
    [
        ("usage", {"group_by": ["flavour"]}, "group_by: 'flavour' is not one of"),
        ("usage", {"time_bucket_width": "1d"}, "ending_at: required when time_bucket_width is set"),
        ("usage", {"exclude_deleted_users": True}, "exclude_deleted_users: requires group_by[]=actor"),
        ("cost", {"limit": 0}, "limit: must be between 1 and 1000"),
        ("cost", {"order_by": "tokens"}, "order_by: 'tokens' is not one of"),
        ("usage_report", {"bucket_width": "1w"}, "bucket_width: '1w' is not one of"),
        ("user_usage_report", {"inference_geos": ["mars"]}, "inference_geos: 'mars' is not one of"),
        ("user_cost_report", {"page": "nonsense"}, "page: 'nonsense' is not a cursor"),
        ("usage", {"ending_at": "2020-03-01T00:00:00Z"}, "ending_at: 2020-03-01T00:00:00Z is not after"),
    ],
)
def test_bad_parameters_are_400s_naming_them(traffic: Traffic, method: str, params: dict[str, Any],
                                             names: str) -> None:  # fmt: skip
    with pytest.raises(anthropic.BadRequestError) as refused:
        getattr(analytics(traffic), method).list(starting_at="2026-01-01T00:00:00Z", **params)
    assert names in refused.value.message


def test_summaries_refuse_group_filters_they_cannot_answer(traffic: Traffic) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        analytics(traffic).summaries.list(starting_date="2026-01-01", filter=["rbac_group_id:rbac_group_01"])
    assert "filter: rbac_group_id is not supported" in refused.value.message
