"""Rate limits and spend limits on the Admin API, against a real ``orgwarden serve`` (SQLite and
PostgreSQL): the official SDK must parse every answer, raw HTTP covers the orgwarden extensions and
every refusal (Anthropic's envelope, a message naming the problem), and each change must leave its
audit event and its cache event (what makes every gateway reload the limits) in the database.

Tests in this module share one organization per backend. Rate-limit tests each use a group of their
own, or clear what they set; spend-limit tests that count rows start from an empty list.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types.beta.organization import BetaSpendLimit, BetaSpendSummary, SpendLimitDeleteResponse
from anthropic.types.organization import OrganizationRateLimit
from anthropic.types.organization.workspaces import WorkspaceRateLimit

from orgwarden import ids
from orgwarden.config import load_settings
from orgwarden.data import load_catalog
from orgwarden.domain.limits import SURFACE_GROUPS, rate_groups
from orgwarden.domain.pricing import Cost
from orgwarden.domain.rollups import Entry
from orgwarden.gateway.recorder import Recorder
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.uow import UnitOfWorkFactory
from tests.conftest import TLS, Server, assert_error, query_db, unique

RATE_LIMITS = "/v1/organizations/rate_limits"
SPEND_LIMITS = "/v1/organizations/spend_limits"
UNKNOWN_WORKSPACE = "wrkspc_01000000000000000000000000"
UNKNOWN_KEY = "apikey_01000000000000000000000000"
GROUPS = rate_groups(load_catalog())
MODEL_GROUPS = [g for g in GROUPS if g.type == "model_group"]


# --------------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def entry_id(client: anthropic.Anthropic, group_type: str) -> str:
    """The organization's entry id for a surface group (each test takes its own)."""
    return next(iter(client.organization.rate_limits.list(group_type=group_type))).id  # type: ignore[arg-type]


def new_workspace(client: anthropic.Anthropic) -> str:
    return client.organization.workspaces.create(name=unique("ws")).id


def new_key(http: httpx.Client, workspace_id: str | None = None) -> dict[str, Any]:
    return ok(http.post("/v1/organizations/api_keys", json={"name": unique("key"), "workspace_id": workspace_id}))


def default_workspace_id(http: httpx.Client) -> str:
    return str(new_key(http)["scope"]["workspace_id"])


def audit_events(server: Server, action: str) -> list[dict[str, Any]]:
    async def query(uow: Any) -> list[dict[str, Any]]:
        rows = await uow.audit.all(server.organization["id"])
        return [
            {"action": r.action, "target_id": r.target_id, "workspace_id": r.workspace_id, "details": r.details,
             "actor_type": r.actor_type}
            for r in rows
            if r.action == action
        ]  # fmt: skip

    result: list[dict[str, Any]] = query_db(server.db, query)
    return result


def cache_events(server: Server, entity_type: str) -> list[str]:
    """The entity ids of every cache event of this type, oldest first."""

    async def query(uow: Any) -> list[str]:
        return [e.entity_id for e in await uow.cache_events.since(0, 100_000) if e.entity_type == entity_type]

    result: list[str] = query_db(server.db, query)
    return result


def clear_spend_limits(client: anthropic.Anthropic) -> None:
    for limit in list(client.beta.organization.spend_limits.list(limit=1000)):
        client.beta.organization.spend_limits.delete(limit.id)


def add_usage(server: Server, workspace_id: str, api_key_id: str, cost_picodollars: int) -> None:
    """A metered request, written by the gateway's recorder (the record and its rollups)."""
    row = {
        "id": ids.new_request_id(), "organization_id": server.organization["id"], "workspace_id": workspace_id,
        "api_key_id": api_key_id, "model": "claude-sonnet-4-6", "service_tier": "standard", "inference_geo": "global",
        "context_window": "0-200k", "speed": "standard", "endpoint": "messages", "stream": False, "completed": True,
        "usage_estimated": False, "user_id": None,
        "input_tokens": 1, "output_tokens": 1, "cache_creation_5m_tokens": 0, "cache_creation_1h_tokens": 0,
        "cache_read_tokens": 0, "web_search_requests": 0, "cost_picodollars": cost_picodollars, "status": 200,
        "latency_ms": 1, "created_at": datetime.now(UTC),
    }  # fmt: skip

    async def record() -> None:
        engine = create_engine(load_settings(**server.db.settings_kwargs))
        recorder = Recorder(UnitOfWorkFactory(session_factory(engine)))
        await recorder.start()
        cost = Cost(input=cost_picodollars, output=0, cache_write_5m=0, cache_write_1h=0, cache_read=0, web_search=0)
        await recorder.put("usage", row, Entry(row, cost, "global"))  # the record and its rollups
        await recorder.stop()
        await engine.dispose()

    asyncio.run(record())


# --------------------------------------------------------------------------------------------------
# organization rate limits


def test_the_sdk_lists_one_entry_per_group_model_groups_first(
    server: Server, client: anthropic.Anthropic, http: httpx.Client
) -> None:
    page = client.organization.rate_limits.list()
    assert page.next_page is None
    entries = page.data
    assert all(isinstance(e, OrganizationRateLimit) for e in entries)
    assert [e.group.type for e in entries] == [g.type for g in GROUPS]
    assert [e.group.type for e in entries][-len(SURFACE_GROUPS) :] == list(SURFACE_GROUPS)
    for entry, group in zip(entries, GROUPS, strict=True):
        assert entry.type == "rate_limit"
        assert entry.id.startswith("rl_")
        assert entry.group.id == group.group_id
        assert entry.group.id.startswith("rlg_")
        assert entry.models == (list(group.models) if group.models is not None else None)
    assert entries[0].group.display_name == MODEL_GROUPS[0].display_name  # type: ignore[union-attr]
    raw = ok(http.get(RATE_LIMITS, params={"beta": "true"}))  # the SDK adds beta=true on beta resources
    assert [e["group_type"] for e in raw["data"]] == [g.type for g in GROUPS]
    assert [e["group"]["display_name"] for e in raw["data"]] == [g.display_name for g in GROUPS]
    assert raw["next_page"] is None


def test_the_organization_list_filters_by_group_type_and_model(client: anthropic.Anthropic, http: httpx.Client) -> None:
    batch = client.organization.rate_limits.list(group_type="batch").data
    assert [e.group.type for e in batch] == ["batch"]
    assert batch[0].models is None
    models = client.organization.rate_limits.list(group_type="model_group").data
    assert [e.group.id for e in models] == [g.group_id for g in MODEL_GROUPS]
    alias = MODEL_GROUPS[1].models[-1]  # type: ignore[index]
    found = client.organization.rate_limits.list(model=alias).data
    assert len(found) == 1
    assert alias in (found[0].models or [])
    assert_error(http.get(RATE_LIMITS, params={"group_type": "spaceships"}), 400, "invalid_request_error",
                 "group_type: 'spaceships'")  # fmt: skip
    assert_error(http.get(RATE_LIMITS, params={"model": "claude-imaginary-9"}), 404, "not_found_error",
                 "claude-imaginary-9")  # fmt: skip
    with pytest.raises(anthropic.NotFoundError):
        client.organization.rate_limits.list(model="claude-imaginary-9")


def test_the_organization_list_pages_with_an_opaque_cursor(client: anthropic.Anthropic, http: httpx.Client) -> None:
    everything = [e.id for e in client.organization.rate_limits.list().data]
    first = ok(http.get(RATE_LIMITS, params={"limit": 3}))
    assert [e["id"] for e in first["data"]] == everything[:3]
    assert isinstance(first["next_page"], str)
    second = ok(http.get(RATE_LIMITS, params={"limit": 3, "page": first["next_page"]}))
    assert [e["id"] for e in second["data"]] == everything[3:6]
    walked = [e.id for e in client.organization.rate_limits.list(limit=3)]  # the SDK follows next_page
    assert walked == everything
    last = client.organization.rate_limits.list(limit=len(everything))
    assert last.next_page is None
    for bad in ("0", "1001", "many"):
        assert_error(http.get(RATE_LIMITS, params={"limit": bad}), 400, "invalid_request_error", "limit")
    assert_error(http.get(RATE_LIMITS, params={"page": "not-a-cursor"}), 400, "invalid_request_error", "page")
    foreign = base64.urlsafe_b64encode(b"ow1:rl_nothing").decode().rstrip("=")
    assert_error(http.get(RATE_LIMITS, params={"page": foreign}), 400, "invalid_request_error", "page")


def test_setting_organization_values_is_an_audited_extension(server: Server, client: anthropic.Anthropic,
                                                             http: httpx.Client) -> None:  # fmt: skip
    rate_limit_id = entry_id(client, "files")
    events_before = len(cache_events(server, "rate_limits"))
    body = {
        "limits": [{"type": "output_tokens_per_minute", "value": 8000}, {"type": "requests_per_minute", "value": 50}]
    }
    entry = ok(http.post(f"{RATE_LIMITS}/{rate_limit_id}", json=body))
    assert entry["id"] == rate_limit_id
    assert entry["type"] == "rate_limit"
    assert entry["group_type"] == "files"
    # listed in LIMITER_TYPES order, whatever the order sent
    assert entry["limits"] == [{"type": "requests_per_minute", "value": 50},
                               {"type": "output_tokens_per_minute", "value": 8000}]  # fmt: skip
    listed = client.organization.rate_limits.list(group_type="files").data[0]
    assert [(v.type, v.value) for v in listed.limits] == [
        ("requests_per_minute", 50),
        ("output_tokens_per_minute", 8000),
    ]
    cleared = ok(http.post(f"{RATE_LIMITS}/{rate_limit_id}", json={"limits": [{"type": "requests_per_minute",
                                                                                 "value": None}]}))  # fmt: skip
    assert cleared["limits"] == [{"type": "output_tokens_per_minute", "value": 8000}]
    ok(
        http.post(
            f"{RATE_LIMITS}/{rate_limit_id}", json={"limits": [{"type": "output_tokens_per_minute", "value": None}]}
        )
    )
    assert client.organization.rate_limits.list(group_type="files").data[0].limits == []
    assert cache_events(server, "rate_limits")[events_before:] == [server.organization["id"]] * 3
    events = [e for e in audit_events(server, "rate_limit.update") if e["target_id"] == rate_limit_id]
    assert [e["details"]["after"] for e in events[-3:]] == [
        {"output_tokens_per_minute": 8000, "requests_per_minute": 50},
        {"requests_per_minute": None},
        {"output_tokens_per_minute": None},
    ]
    assert events[-2]["details"]["before"] == {"requests_per_minute": 50}
    assert events[-1]["details"]["level"] == "organization"
    assert events[-1]["actor_type"] == "admin_api_key"
    # setting a value it already has changes nothing and records nothing
    ok(
        http.post(
            f"{RATE_LIMITS}/{rate_limit_id}", json={"limits": [{"type": "output_tokens_per_minute", "value": None}]}
        )
    )
    assert len(cache_events(server, "rate_limits")) == events_before + 3


# --------------------------------------------------------------------------------------------------
# workspace overrides


def test_workspace_overrides_through_the_sdk(server: Server, client: anthropic.Anthropic, http: httpx.Client) -> None:
    workspace_id = new_workspace(client)
    rate_limit_id = entry_id(client, "skills")
    ok(http.post(f"{RATE_LIMITS}/{rate_limit_id}", json={"limits": [{"type": "requests_per_minute", "value": 600},
                                                                      {"type": "input_tokens_per_minute",
                                                                       "value": 90000}]}))  # fmt: skip
    assert client.organization.workspaces.rate_limits.list(workspace_id).data == []
    events_before = len(cache_events(server, "rate_limits"))

    updated = client.organization.workspaces.rate_limits.update(
        rate_limit_id, workspace_id=workspace_id, limits=[{"type": "requests_per_minute", "value": 60}]
    )
    assert isinstance(updated, WorkspaceRateLimit)
    assert (updated.rate_limit_id, updated.workspace_id, updated.type) == (rate_limit_id, workspace_id,
                                                                            "workspace_rate_limit")  # fmt: skip
    assert updated.group.type == "skills"
    assert updated.models is None
    assert [(v.type, v.value, v.org_limit, v.source.type) for v in updated.limits] == [
        ("requests_per_minute", 60, 600, "workspace")
    ]
    listed = client.organization.workspaces.rate_limits.list(workspace_id).data
    assert [(e.rate_limit_id, [(v.type, v.value) for v in e.limits]) for e in listed] == [
        (rate_limit_id, [("requests_per_minute", 60)])
    ]
    raw = ok(http.get(f"/v1/organizations/workspaces/{workspace_id}/rate_limits"))
    assert raw["data"][0]["group_type"] == "skills"
    assert raw["next_page"] is None

    inherited = client.organization.workspaces.rate_limits.list(workspace_id, include_inherited=True).data
    skills = next(e for e in inherited if e.rate_limit_id == rate_limit_id)
    assert [(v.type, v.value, v.org_limit, v.source.type) for v in skills.limits] == [
        ("requests_per_minute", 60, 600, "workspace"),
        ("input_tokens_per_minute", 90000, 90000, "organization"),
    ]
    only_batch = client.organization.workspaces.rate_limits.list(workspace_id, group_type="batch").data
    assert only_batch == []

    cleared = client.organization.workspaces.rate_limits.update(
        rate_limit_id, workspace_id=workspace_id, limits=[{"type": "requests_per_minute", "value": None}]
    )
    assert cleared.limits == []
    assert client.organization.workspaces.rate_limits.list(workspace_id).data == []
    assert cache_events(server, "rate_limits")[events_before:] == [server.organization["id"]] * 2
    events = [e for e in audit_events(server, "rate_limit.update") if e["workspace_id"] == workspace_id]
    assert [(e["details"]["before"], e["details"]["after"]) for e in events] == [
        ({"requests_per_minute": None}, {"requests_per_minute": 60}),
        ({"requests_per_minute": 60}, {"requests_per_minute": None}),
    ]
    assert all(e["details"]["level"] == "workspace" and e["target_id"] == rate_limit_id for e in events)
    ok(http.post(f"{RATE_LIMITS}/{rate_limit_id}", json={"limits": [{"type": "requests_per_minute", "value": None},
                                                                      {"type": "input_tokens_per_minute",
                                                                       "value": None}]}))  # fmt: skip


def test_workspace_lists_page_across_groups(client: anthropic.Anthropic, http: httpx.Client) -> None:
    workspace_id = new_workspace(client)
    entries = client.organization.rate_limits.list().data
    for entry in entries:
        client.organization.workspaces.rate_limits.update(
            entry.id, workspace_id=workspace_id, limits=[{"type": "output_tokens_per_minute", "value": 1234}]
        )
    walked = [e.rate_limit_id for e in client.organization.workspaces.rate_limits.list(workspace_id, limit=2)]
    assert walked == [e.id for e in entries]
    first = ok(http.get(f"/v1/organizations/workspaces/{workspace_id}/rate_limits", params={"limit": 5}))
    assert len(first["data"]) == 5
    assert first["next_page"]
    rest = ok(http.get(f"/v1/organizations/workspaces/{workspace_id}/rate_limits",
                       params={"page": first["next_page"]}))  # fmt: skip
    assert [e["rate_limit_id"] for e in first["data"] + rest["data"]] == walked
    assert rest["next_page"] is None


def test_workspace_override_refusals(client: anthropic.Anthropic, http: httpx.Client) -> None:
    workspace_id = new_workspace(client)
    rate_limit_id = entry_id(client, "token_count")
    url = f"/v1/organizations/workspaces/{workspace_id}/rate_limits/{rate_limit_id}"
    one = {"limits": [{"type": "requests_per_minute", "value": 10}]}
    cases: list[tuple[Any, str]] = [
        ({"limits": [{"type": "tokens_per_day", "value": 10}]}, "limits[0].type: 'tokens_per_day'"),
        ({"limits": [{"type": "requests_per_minute", "value": 0}]}, "limits[0].value"),
        ({"limits": [{"type": "requests_per_minute", "value": 10**12 + 1}]}, "limits[0].value"),
        ({"limits": [{"type": "requests_per_minute", "value": -5}]}, "limits[0].value"),
        ({"limits": [{"type": "requests_per_minute", "value": "10"}]}, "limits.0.value"),
        ({"limits": [{"type": "requests_per_minute", "value": 1.5}]}, "limits.0.value"),
        ({"limits": [{"type": "requests_per_minute", "value": 1}, {"type": "requests_per_minute", "value": 2}]},
         "limits[1].type: 'requests_per_minute' is given more than once"),
        ({"limits": []}, "limits"),
        ({"limits": [{"type": "requests_per_minute"}]}, "limits.0.value: field required"),
        ({"limit": []}, "limits: field required"),
    ]  # fmt: skip
    for body, message in cases:
        assert_error(http.post(url, json=body), 400, "invalid_request_error", message)
    assert_error(http.post(url, content=b""), 400, "invalid_request_error", "request body is required")
    # the largest value is accepted
    big = ok(http.post(url, json={"limits": [{"type": "requests_per_minute", "value": 10**12}]}))
    assert big["limits"][0]["value"] == 10**12

    assert_error(http.post(f"/v1/organizations/workspaces/{workspace_id}/rate_limits/rl_nothing", json=one), 404,
                 "not_found_error", "rl_nothing")  # fmt: skip
    unknown_ws = f"/v1/organizations/workspaces/{UNKNOWN_WORKSPACE}/rate_limits"
    assert_error(http.post(f"{unknown_ws}/{rate_limit_id}", json=one), 404, "not_found_error", UNKNOWN_WORKSPACE)
    assert_error(http.get(unknown_ws), 404, "not_found_error", UNKNOWN_WORKSPACE)
    default = f"/v1/organizations/workspaces/{default_workspace_id(http)}/rate_limits/{rate_limit_id}"
    assert_error(http.post(default, json=one), 400, "invalid_request_error",
                 "the default workspace takes no rate-limit overrides")  # fmt: skip
    with pytest.raises(anthropic.BadRequestError):
        client.organization.workspaces.rate_limits.update(
            rate_limit_id, workspace_id=default_workspace_id(http), limits=[{"type": "requests_per_minute", "value": 1}]
        )
    client.organization.workspaces.archive(workspace_id)
    assert_error(http.post(url, json=one), 400, "invalid_request_error", "archived")
    # an archived workspace's overrides can still be read
    assert [e["rate_limit_id"] for e in ok(http.get(f"/v1/organizations/workspaces/{workspace_id}/rate_limits"))
            ["data"]] == [rate_limit_id]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# API-key values (extension)


def test_api_key_values_are_an_extension(server: Server, client: anthropic.Anthropic, http: httpx.Client) -> None:
    workspace_id = new_workspace(client)
    key = new_key(http, workspace_id)
    rate_limit_id = entry_id(client, "web_search")
    base = f"/v1/organizations/api_keys/{key['id']}/rate_limits"
    assert ok(http.get(base)) == {"data": [], "next_page": None}
    entry = ok(http.post(f"{base}/{rate_limit_id}", json={"limits": [{"type": "input_tokens_per_minute_cache_aware",
                                                                       "value": 4000}]}))  # fmt: skip
    assert entry == {
        "api_key_id": key["id"],
        "group": {"id": GROUPS[-1].group_id, "display_name": "Web search", "type": "web_search"},
        "group_type": "web_search",
        "limits": [{"source": {"type": "api_key"}, "type": "input_tokens_per_minute_cache_aware", "value": 4000}],
        "models": None,
        "rate_limit_id": rate_limit_id,
        "type": "api_key_rate_limit",
    }
    assert ok(http.get(base))["data"] == [entry]
    assert ok(http.get(base, params={"group_type": "batch"}))["data"] == []
    events = [e for e in audit_events(server, "rate_limit.update") if e["details"]["scope_id"] == key["id"]]
    assert len(events) == 1
    assert events[0]["details"]["level"] == "api_key"
    assert events[0]["workspace_id"] == workspace_id
    cleared = ok(http.post(f"{base}/{rate_limit_id}", json={"limits": [{"type": "input_tokens_per_minute_cache_aware",
                                                                         "value": None}]}))  # fmt: skip
    assert cleared["limits"] == []
    assert ok(http.get(base))["data"] == []

    one = {"limits": [{"type": "requests_per_minute", "value": 1}]}
    unknown = f"/v1/organizations/api_keys/{UNKNOWN_KEY}/rate_limits"
    assert_error(http.get(unknown), 404, "not_found_error", UNKNOWN_KEY)
    assert_error(http.post(f"{unknown}/{rate_limit_id}", json=one), 404, "not_found_error", UNKNOWN_KEY)
    assert_error(http.post(f"{base}/rl_nothing", json=one), 404, "not_found_error", "rl_nothing")
    ok(http.post(f"/v1/organizations/api_keys/{key['id']}", json={"status": "archived"}))
    assert_error(http.post(f"{base}/{rate_limit_id}", json=one), 400, "invalid_request_error", "archived")


def test_a_regular_api_key_can_neither_read_nor_write_limits(
    server: Server, client: anthropic.Anthropic, http: httpx.Client
) -> None:
    secret = new_key(http)["key"]
    rate_limit_id = entry_id(client, "batch")
    with server.http(secret) as as_key:
        for response in (
            as_key.get(RATE_LIMITS),
            as_key.post(
                f"{RATE_LIMITS}/{rate_limit_id}", json={"limits": [{"type": "requests_per_minute", "value": 1}]}
            ),
            as_key.get(SPEND_LIMITS),
            as_key.post(SPEND_LIMITS, json={"amount": "1", "scope": {"type": "organization"}}),
            as_key.get(f"{SPEND_LIMITS}/effective"),
        ):
            assert_error(response, 403, "permission_error", "admin API key")
    with pytest.raises(anthropic.PermissionDeniedError):
        server.client(secret).beta.organization.spend_limits.set(amount="1", scope={"type": "organization"})
    assert client.organization.rate_limits.list(group_type="batch").data[0].limits == []


# --------------------------------------------------------------------------------------------------
# spend limits


def test_spend_limits_through_the_sdk(server: Server, client: anthropic.Anthropic) -> None:
    workspace_id = new_workspace(client)
    spend = client.beta.organization.spend_limits
    created = spend.set(amount="50000", scope={"type": "workspace", "workspace_id": workspace_id}, period="weekly")
    assert isinstance(created, BetaSpendLimit)
    assert created.id.startswith("spl_01")
    assert created.type == "spend_limit"
    assert (created.amount, created.currency, created.is_enabled, created.period) == ("50000", "USD", True, "weekly")
    assert created.scope.type == "workspace"
    assert created.scope.workspace_id == workspace_id
    assert created.created_at == created.updated_at
    assert created.alert_thresholds == [50, 80, 100]  # type: ignore[attr-defined]

    updated = spend.with_raw_response.set(
        amount="75000", scope={"type": "workspace", "workspace_id": workspace_id}, period="weekly",
        extra_body={"alert_thresholds": [90, 25]},
    ).parse()  # fmt: skip
    assert (updated.id, updated.created_at, updated.amount) == (created.id, created.created_at, "75000")
    assert updated.updated_at > created.updated_at
    assert updated.alert_thresholds == [25, 90]  # type: ignore[attr-defined]
    no_cap = spend.set(amount=None, scope={"type": "workspace", "workspace_id": workspace_id}, period="weekly")
    assert no_cap.id == created.id
    assert no_cap.amount is None
    assert no_cap.alert_thresholds == [25, 90]  # type: ignore[attr-defined]  # kept when not sent

    fetched = spend.retrieve(created.id)
    assert fetched.model_dump() == no_cap.model_dump()
    monthly = spend.set(amount="1", scope={"type": "workspace", "workspace_id": workspace_id})
    assert monthly.period == "monthly"
    assert monthly.id != created.id
    listed = [s.id for s in spend.list(workspace_id=workspace_id)]
    assert listed == [created.id, monthly.id]

    deleted = spend.delete(created.id)
    assert isinstance(deleted, SpendLimitDeleteResponse)
    assert (deleted.id, deleted.type) == (created.id, "spend_limit_deleted")
    with pytest.raises(anthropic.NotFoundError):
        spend.retrieve(created.id)
    assert [s.id for s in spend.list(workspace_id=workspace_id)] == [monthly.id]

    org = server.organization["id"]
    actions = [(e["action"], e["target_id"]) for e in audit_events(server, "spend_limit.create")
               + audit_events(server, "spend_limit.update") + audit_events(server, "spend_limit.delete")
               if e["target_id"] in (created.id, monthly.id)]  # fmt: skip
    assert sorted(actions) == sorted([("spend_limit.create", created.id), ("spend_limit.update", created.id),
                                      ("spend_limit.update", created.id), ("spend_limit.create", monthly.id),
                                      ("spend_limit.delete", created.id)])  # fmt: skip
    update = next(e for e in audit_events(server, "spend_limit.update") if e["target_id"] == created.id)
    assert update["details"]["before"] == {"amount_cents": 50000, "alert_thresholds": [50, 80, 100]}
    assert update["details"]["after"] == {"amount_cents": 75000, "alert_thresholds": [25, 90]}
    assert update["workspace_id"] == workspace_id
    assert cache_events(server, "spend_limits")[-5:] == [org] * 5


def test_spend_limit_scopes_and_list_filters(client: anthropic.Anthropic, http: httpx.Client) -> None:
    clear_spend_limits(client)
    spend = client.beta.organization.spend_limits
    workspace_id = new_workspace(client)
    key = new_key(http, workspace_id)
    org_limit = spend.set(amount="100000", scope={"type": "organization"}, period="daily")
    ws_limit = spend.set(amount="5000", scope={"type": "workspace", "workspace_id": workspace_id}, period="daily")
    key_limit = ok(http.post(SPEND_LIMITS, json={"amount": "700", "scope": {"type": "api_key", "api_key_id": key["id"]},
                                                 "period": "daily"}))  # fmt: skip
    assert key_limit["scope"] == {"type": "api_key", "api_key_id": key["id"]}
    parsed = spend.retrieve(key_limit["id"])  # an orgwarden scope the SDK does not know still parses
    assert parsed.scope.type == "api_key"
    assert parsed.amount == "700"

    everything = [org_limit.id, ws_limit.id, key_limit["id"]]
    assert [s.id for s in spend.list()] == everything
    assert [s.id for s in spend.list(scope_type=["workspace"])] == [ws_limit.id]  # scope_type[]=workspace
    repeated = ok(http.get(SPEND_LIMITS, params=[("scope_type", "organization"), ("scope_type", "api_key")]))
    assert [s["id"] for s in repeated["data"]] == [org_limit.id, key_limit["id"]]
    assert [s.id for s in spend.list(workspace_id=workspace_id)] == [ws_limit.id]
    assert spend.list(workspace_id=UNKNOWN_WORKSPACE).data == []
    first = spend.list(limit=2)
    assert [s.id for s in first.data] == everything[:2]
    assert first.next_page
    assert [s.id for s in spend.list(limit=2, page=first.next_page).data] == everything[2:]
    assert [s.id for s in spend.list(limit=1)] == everything  # the SDK follows next_page
    no_beta = httpx.get(
        f"{str(http.base_url).rstrip('/')}{SPEND_LIMITS}", headers={"x-api-key": http.headers["x-api-key"]}, verify=TLS
    )
    assert [s["id"] for s in ok(no_beta)["data"]] == everything
    assert ok(no_beta)["next_page"] is None
    clear_spend_limits(client)


def test_spend_limit_refusals(client: anthropic.Anthropic, http: httpx.Client) -> None:
    workspace_id = new_workspace(client)
    org = {"type": "organization"}
    cases: list[tuple[Any, int, str, str]] = [
        ({"amount": "-1", "scope": org}, 400, "invalid_request_error", "amount: '-1'"),
        ({"amount": "12.50", "scope": org}, 400, "invalid_request_error", "amount: '12.50'"),
        ({"amount": "1e3", "scope": org}, 400, "invalid_request_error", "amount"),
        ({"amount": " 100", "scope": org}, 400, "invalid_request_error", "amount"),
        ({"amount": "", "scope": org}, 400, "invalid_request_error", "amount"),
        ({"amount": str(10**15 + 1), "scope": org}, 400, "invalid_request_error", "amount"),
        ({"amount": 5000, "scope": org}, 400, "invalid_request_error", "amount"),
        ({"scope": org}, 400, "invalid_request_error", "amount: field required"),
        ({"amount": "1", "scope": {"type": "user", "user_id": "user_01"}}, 404, "not_found_error", "user 'user_01'"),
        ({"amount": "1", "scope": {"type": "user"}}, 400, "invalid_request_error", "scope.user_id: required"),
        ({"amount": "1", "scope": {"type": "rbac_group", "rbac_group_id": "g"}}, 400, "invalid_request_error",
         "orgwarden supports organization, workspace, user and api_key scopes"),
        ({"amount": "1", "scope": {"type": "seat_tier", "seat_tier": "x"}}, 400, "invalid_request_error",
         "scope.type: 'seat_tier'"),
        ({"amount": "1", "scope": {"type": "workspace"}}, 400, "invalid_request_error", "scope.workspace_id"),
        ({"amount": "1", "scope": {"type": "organization", "workspace_id": workspace_id}}, 400,
         "invalid_request_error", "scope.workspace_id"),
        ({"amount": "1", "scope": {"type": "api_key"}}, 400, "invalid_request_error", "scope.api_key_id"),
        ({"amount": "1", "scope": {"type": "workspace", "workspace_id": UNKNOWN_WORKSPACE}}, 404, "not_found_error",
         UNKNOWN_WORKSPACE),
        ({"amount": "1", "scope": {"type": "api_key", "api_key_id": UNKNOWN_KEY}}, 404, "not_found_error",
         UNKNOWN_KEY),
        ({"amount": "1", "scope": org, "period": "yearly"}, 400, "invalid_request_error", "period: 'yearly'"),
        ({"amount": "1", "scope": org, "alert_thresholds": [0]}, 400, "invalid_request_error", "alert_thresholds"),
        ({"amount": "1", "scope": org, "alert_thresholds": [1001]}, 400, "invalid_request_error", "alert_thresholds"),
        ({"amount": "1", "scope": org, "alert_thresholds": [50, 50]}, 400, "invalid_request_error",
         "alert_thresholds: 50 is given more than once"),
        ({"amount": "1", "scope": org, "colour": "red"}, 400, "invalid_request_error", "colour: unknown field"),
    ]  # fmt: skip
    for body, status, error_type, message in cases:
        assert_error(http.post(SPEND_LIMITS, json=body), status, error_type, message)
    key = new_key(http, workspace_id)
    client.organization.workspaces.archive(workspace_id)
    assert_error(http.post(SPEND_LIMITS, json={"amount": "1", "scope": {"type": "workspace",
                                                                       "workspace_id": workspace_id}}),
                 400, "invalid_request_error", "archived")  # fmt: skip
    assert_error(http.post(SPEND_LIMITS, json={"amount": "1", "scope": {"type": "api_key", "api_key_id": key["id"]}}),
                 400, "invalid_request_error", "archived")  # fmt: skip
    with pytest.raises(anthropic.NotFoundError) as missing:  # user scopes are served (tests/attrib)
        client.beta.organization.spend_limits.set(amount="1", scope={"type": "user", "user_id": "user_01"})
    assert "user 'user_01' not found" in missing.value.message

    unknown = "spl_01000000000000000000000000"
    assert_error(http.get(f"{SPEND_LIMITS}/{unknown}"), 404, "not_found_error", unknown)
    assert_error(http.delete(f"{SPEND_LIMITS}/{unknown}"), 404, "not_found_error", unknown)
    assert_error(http.get(SPEND_LIMITS, params={"scope_type[]": "seat_tier"}), 400, "invalid_request_error",
                 "scope_type: 'seat_tier'")  # fmt: skip
    for bad in ("0", "1001", "x"):
        assert_error(http.get(SPEND_LIMITS, params={"limit": bad}), 400, "invalid_request_error", "limit")
    assert_error(http.get(SPEND_LIMITS, params={"page": "%%%"}), 400, "invalid_request_error", "page")
    effective = f"{SPEND_LIMITS}/effective"
    assert_error(http.get(effective, params={"period[]": "hourly"}), 400, "invalid_request_error", "period: 'hourly'")
    assert_error(http.get(effective, params=[("user_ids[]", f"user_{i}") for i in range(101)]), 400,
                 "invalid_request_error", "user_ids: at most 100")  # fmt: skip
    assert_error(http.get(effective, params={"limit": "0"}), 400, "invalid_request_error", "limit")


def test_the_effective_report_names_the_binding_limit_and_its_spend(
    server: Server, client: anthropic.Anthropic, http: httpx.Client
) -> None:
    clear_spend_limits(client)
    spend = client.beta.organization.spend_limits
    capped_ws, open_ws = new_workspace(client), new_workspace(client)
    k1, k2 = new_key(http, capped_ws), new_key(http, capped_ws)
    k3 = new_key(http, open_ws)
    mine = [k1["id"], k2["id"], k3["id"]]
    assert spend.effective.list(extra_query={"api_key_ids": mine}).data == []

    org_monthly = spend.set(amount="100000", scope={"type": "organization"}, period="monthly")
    ws_monthly = spend.set(amount="5000", scope={"type": "workspace", "workspace_id": capped_ws}, period="monthly")
    k1_monthly = ok(http.post(SPEND_LIMITS, json={"amount": "9000", "period": "monthly",
                                                  "scope": {"type": "api_key", "api_key_id": k1["id"]}}))  # fmt: skip
    k1_daily = ok(http.post(SPEND_LIMITS, json={"amount": None, "period": "daily",
                                                "scope": {"type": "api_key", "api_key_id": k1["id"]}}))  # fmt: skip
    # metered cost: k1 1.5 cents and 0.0004 cents; k2 2 cents; k3 0.12345 cents
    add_usage(server, capped_ws, k1["id"], 15 * 10**9)
    add_usage(server, capped_ws, k1["id"], 4 * 10**6)
    add_usage(server, capped_ws, k2["id"], 2 * 10**10)
    add_usage(server, open_ws, k3["id"], 1_234_500_000)

    rows = list(spend.effective.list(extra_query={"api_key_ids": mine}))
    assert all(isinstance(r, BetaSpendSummary) for r in rows)
    got = [(r.actor.scoped_api_key_id, r.period, r.source.type, r.spend_limit_id, r.amount, r.period_to_date_spend)  # type: ignore[union-attr]
           for r in rows]  # fmt: skip
    # spend is shown in cents to three decimals, rounded down: workspace 3.5004 -> "3.5";
    # organization 3.5004 + 0.12345 = 3.62385 -> "3.623"
    org_spend = "3.623"
    assert got == [
        (k1["id"], "daily", "api_key", k1_daily["id"], None, "1.5"),  # 1.5004 -> 1.5
        (k1["id"], "monthly", "workspace", ws_monthly.id, "5000", "3.5"),  # 5000 < 9000 < 100000
        (k2["id"], "monthly", "workspace", ws_monthly.id, "5000", "3.5"),
        (k3["id"], "monthly", "organization", org_monthly.id, "100000", org_spend),
    ]
    assert all(r.currency == "USD" and r.scope.type == "api_key" for r in rows)  # type: ignore[comparison-overlap]
    assert rows[0].scope.api_key_id == k1["id"]  # type: ignore[union-attr]
    assert k1_monthly["id"] not in {r.spend_limit_id for r in rows}  # not binding

    monthly = spend.effective.list(period=["monthly"], extra_query={"api_key_ids": mine}).data
    assert [(r.actor.scoped_api_key_id, r.period) for r in monthly] == [  # type: ignore[union-attr]
        (k1["id"], "monthly"), (k2["id"], "monthly"), (k3["id"], "monthly")
    ]  # fmt: skip
    first = spend.effective.list(limit=1, extra_query={"api_key_ids": mine})
    assert [r.period for r in first.data] == ["daily", "monthly"]  # a key's rows never split across pages
    assert first.next_page is not None
    assert [r.actor.scoped_api_key_id for r in spend.effective.list(limit=1, extra_query={"api_key_ids": mine})] == [  # type: ignore[union-attr]
        k1["id"], k1["id"], k2["id"], k3["id"]
    ]  # fmt: skip
    by_creator = spend.effective.list(user_ids=[server.user["id"]], extra_query={"api_key_ids": mine}).data
    assert len(by_creator) == 4
    assert spend.effective.list(user_ids=["user_01000000000000000000000000"]).data == []
    raw = ok(http.get(f"{SPEND_LIMITS}/effective", params=[("api_key_ids", k3["id"]), ("period", "monthly")]))
    assert raw == {"data": [{
        "actor": {"type": "scoped_api_key_actor", "scoped_api_key_id": k3["id"]}, "amount": "100000", "currency": "USD",
        "period": "monthly", "period_to_date_spend": org_spend, "scope": {"type": "api_key", "api_key_id": k3["id"]},
        "source": {"type": "organization"}, "spend_limit_id": org_monthly.id,
    }], "next_page": None}  # fmt: skip
    # without an organization limit, only the keys a limit reaches are listed
    spend.delete(org_monthly.id)
    reached = {r.actor.scoped_api_key_id for r in spend.effective.list(extra_query={"api_key_ids": mine})}  # type: ignore[union-attr]
    assert reached == {k1["id"], k2["id"]}
    clear_spend_limits(client)
