"""The usage report and the cost report, figure by figure, over traffic sent through the gateway.

Known traffic goes through a real server (simulator upstream) once per backend: three keys in three
workspaces (one the default), three models, JSON and streams, a cache write, a cache read, a web
search and a ``us`` inference geo. Every figure the reports give is checked against what the
responses said they used, priced by hand here from the public prices, and against the metered
records. Bucket edges, empty buckets and paging are checked on records written at fixed past
instants through the gateway's own recorder (the gateway's clock cannot be set from outside).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from orgwarden.config import load_settings
from orgwarden.data import load_catalog
from orgwarden.domain.pricing import TokenUsage, cost_of
from orgwarden.domain.rollups import Entry
from orgwarden.gateway.recorder import Recorder
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory
from tests.conftest import TLS, Server, assert_error, query_db, unique

SONNET, OPUS, HAIKU = "claude-sonnet-4-5-20250929", "claude-opus-4-6", "claude-haiku-4-5-20251001"
# USD per million tokens: input, output, 5m cache write, 1h cache write, cache read (public prices)
PRICES = {
    SONNET: ("3", "15", "3.75", "6", "0.3"),
    OPUS: ("5", "25", "6.25", "10", "0.5"),
    HAIKU: ("1", "5", "1.25", "2", "0.1"),
}
FAST = {"anthropic-beta": "fast-mode-2026-02-01"}
USAGE, COST = "/v1/organizations/usage_report/messages", "/v1/organizations/cost_report"
PAST_DAY = datetime(2025, 3, 31, tzinfo=UTC)  # the edge records' day (long before the live traffic)


@dataclass
class Sent:
    """One request sent and what its response said it used."""

    key_id: str
    workspace_id: str | None  # None: the default workspace (as reports show it)
    model: str
    geo: str  # as reports show it
    usage: dict[str, int]


@dataclass
class Traffic:
    server: Server
    sent: list[Sent] = field(default_factory=list)
    default_workspace: str = ""
    today: datetime = PAST_DAY


def picodollars(sent: Sent) -> dict[str, int]:
    """Cost per kind, in picodollars, from the public prices ($/MTok = 10^6 pd per token)."""
    factor = Decimal("1.1") if sent.geo == "us" else Decimal(1)
    prices = [Decimal(p) * 10**6 * factor for p in PRICES[sent.model]]
    u = sent.usage
    kinds = ("input", "output", "write_5m", "write_1h", "read")
    tokens = (u["input"], u["output"], u["write_5m"], u["write_1h"], u["read"])
    out = {kind: int(n * price) for kind, n, price in zip(kinds, tokens, prices, strict=True)}
    out["web_search"] = u["searches"] * 10**10  # $10 per 1,000 searches
    return out


def admin(server: Server, method: str, path: str, **kwargs: Any) -> Any:
    with server.http() as http:
        response = http.request(method, path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def report(server: Server, path: str, params: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A report through the official SDK (it sends arrays as ``name[]=a&name[]=b``)."""
    result = server.client().get(path, cast_to=object, options={"params": params, "headers": headers or {}})
    assert isinstance(result, dict)
    return result


def send(traffic: Traffic, key: dict[str, Any], workspace: str | None, geo: str, body: dict[str, Any],
         headers: dict[str, str] | None = None) -> None:  # fmt: skip
    with traffic.server.http(key["key"]) as http:
        response = http.post("/v1/messages", json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    if body.get("stream"):
        usage: dict[str, Any] = {}
        for line in response.text.splitlines():
            if line.startswith("data:") and '"usage"' in line:
                event = json.loads(line[5:])
                usage = {**usage, **(event.get("message", {}).get("usage") or event.get("usage") or {})}
    else:
        usage = response.json()["usage"]
    creation = usage.get("cache_creation") or {}
    traffic.sent.append(
        Sent(key["id"], workspace, body["model"], geo, {
            "input": usage["input_tokens"], "output": usage["output_tokens"],
            "write_5m": creation.get("ephemeral_5m_input_tokens", 0),
            "write_1h": creation.get("ephemeral_1h_input_tokens", 0),
            "read": usage.get("cache_read_input_tokens", 0),
            "searches": (usage.get("server_tool_use") or {}).get("web_search_requests", 0),
        })
    )  # fmt: skip


def message(model: str, text: str = "Hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module")
def traffic(server: Server) -> Traffic:
    t = Traffic(server)
    ws_a = admin(server, "POST", "/v1/organizations/workspaces", json={
        "name": unique("ra"),
        "data_residency": {"workspace_geo": "us", "allowed_inference_geos": ["us", "global"],
                           "default_inference_geo": "global"},
    })["id"]  # fmt: skip
    ws_b = admin(server, "POST", "/v1/organizations/workspaces", json={"name": unique("rb")})["id"]
    k0 = admin(server, "POST", "/v1/organizations/api_keys", json={"name": unique("k0")})
    ka = admin(server, "POST", "/v1/organizations/api_keys", json={"name": unique("ka"), "workspace_id": ws_a})
    kb = admin(server, "POST", "/v1/organizations/api_keys", json={"name": unique("kb"), "workspace_id": ws_b})
    t.default_workspace = query_db(server.db, lambda uow: uow.workspaces.default(server.organization["id"])).id
    long_text = "cached context " * 400
    cached = [{"type": "text", "text": long_text, "cache_control": {"type": "ephemeral"}}]
    cached_1h = [{"type": "text", "text": long_text, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    send(t, k0, None, "not_available", message(SONNET), {"anthropic-simulator-output-tokens": "7"})
    send(t, k0, None, "not_available", message(SONNET, "A longer question " * 20, stream=True))
    send(t, ka, ws_a, "global", message(OPUS, stream=True, system=cached))
    send(t, ka, ws_a, "us", message(OPUS, inference_geo="us", system=cached_1h))
    send(t, ka, ws_a, "global", message(OPUS, system=cached), {"anthropic-simulator-cache": "read"})
    search = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
    send(t, kb, ws_b, "not_available", message(HAIKU, tools=search))
    send(t, kb, ws_b, "not_available", message(SONNET), {"anthropic-simulator-output-tokens": "33"})
    t.today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # The recorder writes every 0.2 s: wait until the report holds every request's input.
    expected = sum(s.usage["input"] for s in t.sent)
    deadline = time.monotonic() + 10
    while True:
        results = report(server, USAGE, {"starting_at": iso(t.today)})["data"][0]["results"]
        if results and results[0]["uncached_input_tokens"] == expected:
            break
        assert time.monotonic() < deadline, f"the usage report never reached {expected} input tokens: {results}"
        time.sleep(0.1)
    assert {s.geo for s in t.sent} == {"not_available", "global", "us"}
    assert any(s.usage["write_5m"] for s in t.sent)
    assert any(s.usage["write_1h"] for s in t.sent)
    assert any(s.usage["read"] for s in t.sent)
    assert any(s.usage["searches"] for s in t.sent)
    return t


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


DIMENSION_OF = {
    "api_key_id": lambda s: s.key_id,
    "workspace_id": lambda s: s.workspace_id,
    "model": lambda s: s.model,
    "service_tier": lambda s: "standard",
    "context_window": lambda s: "0-200k",
    "inference_geo": lambda s: s.geo,
    "speed": lambda s: "standard",
}


def expected_usage(sent: list[Sent], groups: list[str]) -> list[dict[str, Any]]:
    totals: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for s in sent:
        key = tuple(DIMENSION_OF[g](s) if g in DIMENSION_OF else None for g in groups)
        for name, value in s.usage.items():
            totals[key][name] += value
    rows = []
    for key, u in totals.items():
        row: dict[str, Any] = {name: None for name in (*DIMENSION_OF, "account_id", "service_account_id")}
        row.update(zip(groups, key, strict=True))
        row.update(
            uncached_input_tokens=u["input"], output_tokens=u["output"], cache_read_input_tokens=u["read"],
            cache_creation={"ephemeral_1h_input_tokens": u["write_1h"], "ephemeral_5m_input_tokens": u["write_5m"]},
            server_tool_use={"web_search_requests": u["searches"]}, estimated_requests=0,
        )  # fmt: skip
        rows.append(row)
    return sorted(rows, key=repr)


def today_results(traffic: Traffic, params: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    body = report(traffic.server, USAGE, {"starting_at": iso(traffic.today), **params}, headers)
    assert len(body["data"]) == 1
    assert body["has_more"] is False
    assert body["next_page"] is None
    bucket = body["data"][0]
    assert (bucket["starting_at"], bucket["ending_at"]) == (iso(traffic.today), iso(traffic.today + timedelta(1)))
    return sorted(bucket["results"], key=repr)


# --------------------------------------------------------------------------------------------------
# usage report


GROUPINGS = [
    [], *([g] for g in DIMENSION_OF), ["account_id", "service_account_id"], ["workspace_id", "model"],
    ["api_key_id", "model", "inference_geo", "speed"], list(DIMENSION_OF),
]  # fmt: skip


@pytest.mark.parametrize("groups", GROUPINGS, ids=lambda g: "+".join(g) or "none")
def test_every_group_by_gives_the_exact_figures_and_null_for_what_is_not_grouped(
    traffic: Traffic, groups: list[str]
) -> None:
    headers = FAST if "speed" in groups else None
    params = {"group_by": groups, "bucket_width": "1d"} if groups else {}
    assert today_results(traffic, params, headers) == expected_usage(traffic.sent, groups)


def test_the_default_workspace_is_null_and_keys_and_workspaces_are_theirs(traffic: Traffic) -> None:
    rows = today_results(traffic, {"group_by": ["workspace_id", "api_key_id"]})
    assert len(rows) == 3
    assert sorted((r["workspace_id"] is None) for r in rows) == [False, False, True]


FILTERS = [
    ("models", lambda t: [OPUS], lambda s: s.model == OPUS),
    ("models", lambda t: [SONNET, HAIKU], lambda s: s.model in (SONNET, HAIKU)),
    ("api_key_ids", lambda t: [t.sent[0].key_id], lambda s: s.workspace_id is None),  # k0: the default's only key
    ("workspace_ids", lambda t: [t.default_workspace], lambda s: s.workspace_id is None),
    ("workspace_ids", lambda t: [t.sent[-1].workspace_id], lambda s: s.workspace_id is not None and s.model != OPUS),
    ("service_tiers", lambda t: ["standard"], lambda s: True),
    ("service_tiers", lambda t: ["batch", "priority"], lambda s: False),
    ("context_window", lambda t: ["0-200k"], lambda s: True),
    ("context_window", lambda t: ["200k-1M"], lambda s: False),
    ("inference_geos", lambda t: ["us"], lambda s: s.geo == "us"),
    ("inference_geos", lambda t: ["not_available"], lambda s: s.geo == "not_available"),
    ("inference_geos", lambda t: ["global", "us"], lambda s: s.geo != "not_available"),
    ("speeds", lambda t: ["standard"], lambda s: True),
    ("speeds", lambda t: ["fast"], lambda s: False),
    ("account_ids", lambda t: ["user_01abc"], lambda s: False),
    ("service_account_ids", lambda t: ["svac_01abc"], lambda s: False),
]


@pytest.mark.parametrize("index", range(len(FILTERS)), ids=lambda i: f"{FILTERS[i][0]}-{i}")
def test_every_filter_keeps_exactly_the_matching_usage(traffic: Traffic, index: int) -> None:
    name, values, keep = FILTERS[index]
    headers = FAST if name == "speeds" else None
    kept = [s for s in traffic.sent if keep(s)]
    rows = today_results(traffic, {name: values(traffic), "group_by": ["model"]}, headers)
    assert rows == expected_usage(kept, ["model"])


def test_array_parameters_are_read_in_both_spellings(traffic: Traffic) -> None:
    start = iso(traffic.today)
    with traffic.server.http() as http:
        brackets = http.get(USAGE, params=[
            ("starting_at", start), ("group_by[]", "model"), ("group_by[]", "api_key_id"), ("models[]", OPUS),
            ("models[]", HAIKU),
        ])  # fmt: skip
        plain = http.get(USAGE, params=[
            ("starting_at", start), ("group_by", "model"), ("group_by", "api_key_id"), ("models", OPUS),
            ("models", HAIKU),
        ])  # fmt: skip
    assert brackets.status_code == plain.status_code == 200, brackets.text
    assert brackets.json() == plain.json()
    assert {r["model"] for r in brackets.json()["data"][0]["results"]} == {OPUS, HAIKU}


@pytest.mark.parametrize(
    ("query", "headers", "names"),
    [
        ({}, {}, "starting_at: required"),
        ({"starting_at": "yesterday"}, {}, "starting_at: 'yesterday' is not an RFC 3339"),
        ({"starting_at": "2025-01-01T00:00:00"}, {}, "starting_at: '2025-01-01T00:00:00' has no time zone"),
        ({"starting_at": "2025-01-02T00:00:00Z", "ending_at": "2025-01-01T00:00:00Z"}, {}, "ending_at:"),
        ({"starting_at": "2025-01-02T00:00:00Z", "ending_at": "2025-01-02T00:00:00Z"}, {}, "ending_at:"),
        ({"starting_at": "2025-01-01T00:00:00Z", "group_by": "user"}, {}, "group_by: 'user' is not one of"),
        ({"starting_at": "2025-01-01T00:00:00Z", "limit": "32"}, {}, "limit: at most 31 buckets for bucket_width 1d"),
        ({"starting_at": "2025-01-01T00:00:00Z", "bucket_width": "1h", "limit": "169"}, {}, "limit: at most 168"),
        ({"starting_at": "2025-01-01T00:00:00Z", "bucket_width": "1m", "limit": "1441"}, {}, "limit: at most 1440"),
        ({"starting_at": "2025-01-01T00:00:00Z", "limit": "0"}, {}, "limit: must be at least 1"),
        ({"starting_at": "2025-01-01T00:00:00Z", "bucket_width": "1w"}, {}, "bucket_width: '1w' is not one of"),
        ({"starting_at": "2025-01-01T00:00:00Z", "group_by": "speed"}, {}, "fast-mode-2026-02-01"),
        ({"starting_at": "2025-01-01T00:00:00Z", "speeds": "fast"}, {}, "speeds requires the anthropic-beta"),
        ({"starting_at": "2025-01-01T00:00:00Z", "speeds": "slow"}, FAST, "speeds: 'slow' is not one of"),
        ({"starting_at": "2025-01-01T00:00:00Z", "inference_geos": "eu"}, {}, "inference_geos: 'eu' is not one of"),
        ({"starting_at": "2025-01-01T00:00:00Z", "service_tiers": "gold"}, {}, "service_tiers: 'gold' is not one"),
        ({"starting_at": "2025-01-01T00:00:00Z", "context_window": "1M"}, {}, "context_window: '1M' is not one of"),
        ({"starting_at": "2025-01-01T00:00:00Z", "page": "nonsense"}, {}, "page: 'nonsense' is not a next_page"),
        ({"starting_at": "2025-01-02T00:00:00Z", "page": "2025-01-01T00:00:00Z"}, {}, "page:"),
        ({"starting_at": "2025-01-01T00:00:00Z", "page": "2025-01-01T00:30:00Z"}, {}, "page:"),
    ],
)
def test_invalid_parameters_are_refused_with_400_naming_the_parameter(
    server: Server, query: dict[str, str], headers: dict[str, str], names: str
) -> None:
    with server.http() as http:
        response = http.get(USAGE, params=query, headers=headers)
    assert_error(response, 400, "invalid_request_error", names)


def test_reports_need_an_admin_key(server: Server, traffic: Traffic) -> None:
    key = admin(server, "POST", "/v1/organizations/api_keys", json={"name": unique("nk")})
    for path in (USAGE, COST):
        with server.http(key["key"]) as http:
            assert http.get(path, params={"starting_at": iso(traffic.today)}).status_code in (401, 403)
        with httpx.Client(base_url=server.base_url, verify=TLS) as anonymous:
            assert anonymous.get(path, params={"starting_at": iso(traffic.today)}).status_code == 401


# --------------------------------------------------------------------------------------------------
# cost report


def cents(picodollars: int) -> Decimal:
    return Decimal(picodollars).scaleb(-10)


def test_the_cost_report_total_is_the_metered_total_exactly(traffic: Traffic) -> None:
    body = report(traffic.server, COST, {"starting_at": iso(traffic.today)})
    (bucket,) = body["data"]
    (row,) = bucket["results"]
    by_hand = sum(sum(picodollars(s).values()) for s in traffic.sent)

    async def metered(uow: UnitOfWork) -> int:
        rows = await uow.usage.for_organization(traffic.server.organization["id"])
        return sum(r.cost_picodollars for r in rows if r.endpoint == "messages" and r.created_at >= traffic.today)

    assert Decimal(row["amount"]) == cents(by_hand) == cents(query_db(traffic.server.db, metered))
    assert row == {
        "amount": row["amount"], "currency": "USD", "workspace_id": None, "description": None, "cost_type": None,
        "model": None, "service_tier": None, "token_type": None, "context_window": None, "inference_geo": None,
    }  # fmt: skip


def test_the_cost_report_by_workspace_and_description_prices_every_token_type(traffic: Traffic) -> None:
    params = {"starting_at": iso(traffic.today), "group_by": ["workspace_id", "description"]}
    body = report(traffic.server, COST, params)
    rows = body["data"][0]["results"]
    expected: dict[tuple[Any, ...], int] = defaultdict(int)
    names = {SONNET: "Claude Sonnet 4.5", OPUS: "Claude Opus 4.6", HAIKU: "Claude Haiku 4.5"}
    labels = {
        "input": ("uncached_input_tokens", "Input Tokens"),
        "output": ("output_tokens", "Output Tokens"),
        "write_5m": ("cache_creation.ephemeral_5m_input_tokens", "Cache Write Input Tokens (5m)"),
        "write_1h": ("cache_creation.ephemeral_1h_input_tokens", "Cache Write Input Tokens (1h)"),
        "read": ("cache_read_input_tokens", "Cache Read Input Tokens"),
    }
    for s in traffic.sent:
        cost = picodollars(s)
        for kind, (token_type, label) in labels.items():
            if s.usage[kind]:
                key = (s.workspace_id, "tokens", f"{names[s.model]} Usage - {label}", s.model, "standard", token_type,
                       "0-200k", s.geo)  # fmt: skip
                expected[key] += cost[kind]
        if s.usage["searches"]:
            expected[(s.workspace_id, "web_search", "Web Search", None, None, None, None, None)] += cost["web_search"]
    fields = ("workspace_id", "cost_type", "description", "model", "service_tier", "token_type", "context_window",
              "inference_geo")  # fmt: skip
    got = {tuple(r[f] for f in fields): Decimal(r["amount"]) for r in rows}
    assert got == {key: cents(value) for key, value in expected.items()}
    assert all(r["currency"] == "USD" for r in rows)
    total = report(traffic.server, COST, {"starting_at": iso(traffic.today)})["data"][0]["results"][0]["amount"]
    assert sum(got.values()) == Decimal(total)


def test_the_cost_report_by_workspace_alone(traffic: Traffic) -> None:
    rows = report(traffic.server, COST, {"starting_at": iso(traffic.today), "group_by[]": "workspace_id"})
    got = {r["workspace_id"]: Decimal(r["amount"]) for r in rows["data"][0]["results"]}
    expected: dict[str | None, int] = defaultdict(int)
    for s in traffic.sent:
        expected[s.workspace_id] += sum(picodollars(s).values())
    assert got == {w: cents(v) for w, v in expected.items()}


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({"starting_at": "2025-01-01T00:00:00Z", "bucket_width": "1h"}, "bucket_width: the cost report has only 1d"),
        ({"starting_at": "2025-01-01T00:00:00Z", "group_by": "model"}, "group_by: 'model' is not one of"),
        ({"starting_at": "2025-01-01T00:00:00Z", "limit": "32"}, "limit: at most 31"),
        ({"ending_at": "2025-01-01T00:00:00Z"}, "starting_at: required"),
    ],
)
def test_the_cost_report_refuses_what_it_does_not_offer(server: Server, query: dict[str, str], names: str) -> None:
    with server.http() as http:
        assert_error(http.get(COST, params=query), 400, "invalid_request_error", names)


# --------------------------------------------------------------------------------------------------
# bucket edges, empty buckets and paging (records at fixed instants, through the recorder)

EDGE_TIMES = [
    PAST_DAY - timedelta(days=1, hours=12),  # 03-29 12:00: a day before an empty day
    PAST_DAY + timedelta(hours=23, minutes=59, seconds=59, microseconds=999000),  # 03-31 23:59:59.999
    PAST_DAY + timedelta(days=1),  # 04-01 00:00:00.000
]


@pytest.fixture(scope="module")
def edges(traffic: Traffic) -> str:
    """Three records at the edge instants, each of 100 input and 10 output tokens on Sonnet 4.5, by
    one key; returns the key id."""
    server = traffic.server
    key_id = admin(server, "POST", "/v1/organizations/api_keys", json={"name": unique("edge")})["id"]
    catalog = load_catalog()
    model = catalog.find(SONNET)
    assert model is not None
    usage = TokenUsage(input_tokens=100, output_tokens=10)

    async def write() -> None:
        engine = create_engine(load_settings(**server.db.settings_kwargs))
        recorder = Recorder(UnitOfWorkFactory(session_factory(engine)))
        await recorder.start()
        for at in EDGE_TIMES:
            cost = cost_of(catalog, model, usage)
            record = dict(
                id=f"req_edge{unique()}", organization_id=server.organization["id"],
                workspace_id=traffic.default_workspace, api_key_id=key_id, model=SONNET, service_tier="standard",
                inference_geo="global", context_window="0-200k", speed="standard", endpoint="messages",
                stream=False, completed=True, usage_estimated=False, user_id=None,
                input_tokens=100, output_tokens=10, cache_creation_5m_tokens=0, cache_creation_1h_tokens=0,
                cache_read_tokens=0, web_search_requests=0, cost_picodollars=cost.total, status=200, latency_ms=1,
                created_at=at,
            )  # fmt: skip
            await recorder.put("usage", record, Entry(record, cost, "not_available"))
        await recorder.stop()
        await engine.dispose()

    asyncio.run(write())
    return key_id


def buckets(server: Server, key_id: str, **params: Any) -> list[tuple[str, int]]:
    """(starting_at, input tokens) per bucket of every page, following next_page to the end."""
    out: list[tuple[str, int]] = []
    page: str | None = None
    while True:
        body = report(server, USAGE, {**params, "api_key_ids": [key_id], **({"page": page} if page else {})})
        out += [(b["starting_at"], sum(r["uncached_input_tokens"] for r in b["results"])) for b in body["data"]]
        if not body["has_more"]:
            assert body["next_page"] is None
            return out
        page = body["next_page"]
        assert page == body["data"][-1]["ending_at"]


def test_a_request_at_235959999_and_one_at_midnight_fall_in_neighbouring_days(traffic: Traffic, edges: str) -> None:
    start, end = iso(PAST_DAY - timedelta(days=2)), iso(PAST_DAY + timedelta(days=3))
    assert buckets(traffic.server, edges, starting_at=start, ending_at=end, limit=2) == [
        ("2025-03-29T00:00:00Z", 100), ("2025-03-30T00:00:00Z", 0), ("2025-03-31T00:00:00Z", 100),
        ("2025-04-01T00:00:00Z", 100), ("2025-04-02T00:00:00Z", 0),
    ]  # fmt: skip


def test_hour_and_minute_buckets_split_at_the_edge_and_page_across_it(traffic: Traffic, edges: str) -> None:
    hours = buckets(traffic.server, edges, starting_at="2025-03-31T22:30:00Z", ending_at="2025-04-01T02:00:00Z",
                    bucket_width="1h", limit=1)  # fmt: skip
    assert hours == [("2025-03-31T22:00:00Z", 0), ("2025-03-31T23:00:00Z", 100), ("2025-04-01T00:00:00Z", 100),
                     ("2025-04-01T01:00:00Z", 0)]  # fmt: skip
    minutes = buckets(traffic.server, edges, starting_at="2025-03-31T23:58:00Z", ending_at="2025-04-01T00:02:30Z",
                      bucket_width="1m", limit=3)  # fmt: skip
    assert minutes == [("2025-03-31T23:58:00Z", 0), ("2025-03-31T23:59:00Z", 100), ("2025-04-01T00:00:00Z", 100),
                       ("2025-04-01T00:01:00Z", 0)]  # fmt: skip


def test_a_bucket_still_open_at_ending_at_is_not_returned_and_the_default_limit_pages(
    traffic: Traffic, edges: str
) -> None:
    # ending_at mid-day: 04-01 ends after it, so only 03-31 is whole.
    one = report(traffic.server, USAGE, {"starting_at": "2025-03-31T05:00:00Z", "ending_at": "2025-04-01T12:00:00Z",
                                         "api_key_ids": [edges]})  # fmt: skip
    assert [b["starting_at"] for b in one["data"]] == ["2025-03-31T00:00:00Z"]
    assert one["has_more"] is False
    # No ending_at: buckets up to today, 7 a page by default for 1d.
    first = report(traffic.server, USAGE, {"starting_at": "2025-03-29T00:00:00Z", "api_key_ids": [edges]})
    assert len(first["data"]) == 7
    assert first["has_more"] is True
    assert first["next_page"] == "2025-04-05T00:00:00Z"


def test_the_cost_report_pages_over_days_and_keeps_empty_ones(traffic: Traffic, edges: str) -> None:
    params = {"starting_at": "2025-03-29T00:00:00Z", "ending_at": "2025-04-02T00:00:00Z", "limit": 3}
    first = report(traffic.server, COST, params)
    second = report(traffic.server, COST, {**params, "page": first["next_page"]})
    assert first["has_more"] is True
    assert second["has_more"] is False
    days = [(b["starting_at"], [Decimal(r["amount"]) for r in b["results"]]) for b in first["data"] + second["data"]]
    per_record = cents(100 * 3 * 10**6 + 10 * 15 * 10**6)
    assert days == [("2025-03-29T00:00:00Z", [per_record]), ("2025-03-30T00:00:00Z", []),
                    ("2025-03-31T00:00:00Z", [per_record]), ("2025-04-01T00:00:00Z", [per_record])]  # fmt: skip
