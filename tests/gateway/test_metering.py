"""Metering: exactly one usage record per request that reached the upstream, with the right figures.

Token counts come from the simulator's answer (the upstream is the source of truth); costs are
computed here, independently, from the public list prices of the model used (claude-sonnet-4-6:
$3 input, $15 output per million tokens; cache writes 1.25x (5 minutes) and 2x (1 hour), cache reads
0.1x; a US inference geo 1.1x) as integer picodollars: tokens x USD per MTok x 1e6.

Records are written in batches off the request path, so the tests poll the database (up to 5 s);
a request is matched to its record by the ``request-id`` response header, which is the record's id.
The last tests stop a server with SIGTERM while it is under load and count what was written.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from orgwarden.storage.tables import UsageRecord
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import (
    BACKENDS,
    SdkHttpClient,
    Server,
    dedicated_server,
    drop_database,
    make_database,
    query_db,
    redis_settings,
    start_server,
    stop_server,
    unique,
)

MODEL = "claude-sonnet-4-6"
# USD per million tokens (public list prices), by token kind
PRICES = {
    "input": Decimal("3"),
    "output": Decimal("15"),
    "cache_write_5m": Decimal("3.75"),
    "cache_write_1h": Decimal("6"),
    "cache_read": Decimal("0.30"),
}
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "How much does this cost?"}]
REQUEST: dict[str, Any] = {"model": MODEL, "max_tokens": 1024, "messages": MESSAGES}
LONG_TEXT = "Orgwarden meters every request that reaches the upstream. " * 40


# --------------------------------------------------------------------------------------------------
# helpers


def picodollars(
    *, input: int = 0, output: int = 0, write_5m: int = 0, write_1h: int = 0, read: int = 0, factor: str = "1"
) -> int:
    """The cost of the given token counts, computed from the list prices."""
    tokens = {"input": input, "output": output, "cache_write_5m": write_5m, "cache_write_1h": write_1h,
              "cache_read": read}  # fmt: skip
    total = sum(count * PRICES[kind] * Decimal(factor) * 10**6 for kind, count in tokens.items())
    assert total == total.to_integral_value()
    return int(total)


def create_key(server: Server, workspace_id: str | None = None) -> dict[str, Any]:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("meter"), "workspace_id": workspace_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


def read_records(server: Server) -> dict[str, UsageRecord]:
    """Every usage record of the server's organization, by id (= request id), read from the database."""

    async def read(uow: UnitOfWork) -> dict[str, UsageRecord]:
        rows = await uow.usage.for_organization(server.organization["id"])
        by_id = {row.id: row for row in rows}
        assert len(by_id) == len(rows), "two records with one request id"
        return by_id

    return query_db(server.db, read)


def wait_for_records(server: Server, request_ids: list[str], timeout: float = 5.0) -> dict[str, UsageRecord]:
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(server)
        missing = [rid for rid in request_ids if rid not in records]
        if not missing:
            return records
        assert time.monotonic() < deadline, f"no usage record after {timeout}s for {missing}"
        time.sleep(0.1)


def records_of_key(server: Server, key_id: str, expected: int) -> list[UsageRecord]:
    """The key's records, once ``expected`` are there; then a settle to prove no more arrive."""
    deadline = time.monotonic() + 5
    while len(found := [r for r in read_records(server).values() if r.api_key_id == key_id]) < expected:
        assert time.monotonic() < deadline, f"{len(found)} of {expected} records after 5s"
        time.sleep(0.1)
    time.sleep(0.5)  # more than two flush intervals: a duplicate would show up now
    found = [r for r in read_records(server).values() if r.api_key_id == key_id]
    assert len(found) == expected, [(r.id, r.endpoint, r.status) for r in found]
    return found


def sse_usage(raw: bytes) -> tuple[dict[str, Any], int, list[str]]:
    """(message_start usage, the last message_delta's output tokens, event names) of an SSE body."""
    start: dict[str, Any] = {}
    output = -1
    names = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name_line, *data_lines = block.split("\n")
        name = name_line.removeprefix("event: ")
        names.append(name)
        data = json.loads("".join(line.removeprefix("data: ") for line in data_lines))
        if name == "message_start":
            start = data["message"]["usage"]
        elif name == "message_delta":
            output = data["usage"]["output_tokens"]
    return start, output, names


def assert_common(record: UsageRecord, server: Server, key: dict[str, Any], *, stream: bool) -> None:
    assert record.organization_id == server.organization["id"]
    assert record.workspace_id == key["scope"]["workspace_id"]
    assert record.api_key_id == key["id"]
    assert record.model == MODEL
    assert record.endpoint == "messages"
    assert record.stream is stream
    assert record.service_tier == "standard"
    assert record.speed == "standard"
    assert record.context_window == "0-200k"
    assert record.latency_ms >= 0
    assert record.created_at is not None


def cached_request(**extra: Any) -> dict[str, Any]:
    """A request with a 5-minute cache breakpoint in the system prompt and a 1-hour one in a message."""
    return {
        **REQUEST,
        "system": [{"type": "text", "text": LONG_TEXT, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": LONG_TEXT.upper(), "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                    {"type": "text", "text": "And what does the cache cost?"},
                ],
            }
        ],
        **extra,
    }


@pytest.fixture(scope="module")
def key(server: Server) -> dict[str, Any]:
    return create_key(server)


# --------------------------------------------------------------------------------------------------
# successful requests


def test_each_non_streaming_message_makes_exactly_one_record_with_its_tokens_and_cost(server: Server) -> None:
    key = create_key(server)
    responses = []
    with server.http(key["key"]) as http:
        for output in (1, 40, 700):
            response = http.post(
                "/v1/messages", json=REQUEST, headers={"anthropic-simulator-output-tokens": str(output)}
            )
            assert response.status_code == 200, response.text
            assert response.json()["usage"]["output_tokens"] == output
            responses.append(response)
    records = {r.id: r for r in records_of_key(server, key["id"], 3)}
    for response in responses:
        usage = response.json()["usage"]
        record = records[response.headers["request-id"]]
        assert_common(record, server, key, stream=False)
        assert (record.input_tokens, record.output_tokens) == (usage["input_tokens"], usage["output_tokens"])
        assert record.input_tokens > 0
        assert (record.cache_creation_5m_tokens, record.cache_creation_1h_tokens, record.cache_read_tokens) == (0, 0, 0)
        assert record.web_search_requests == 0
        assert record.cost_picodollars == picodollars(input=record.input_tokens, output=record.output_tokens)
        assert (record.status, record.completed, record.inference_geo) == (200, True, "global")
    # 700 output tokens of claude-sonnet-4-6: 700 x $15 / 1e6 = $0.0105 = 10_500_000_000 picodollars
    assert (
        records[responses[2].headers["request-id"]].cost_picodollars
        - picodollars(input=records[responses[2].headers["request-id"]].input_tokens)
        == 10_500_000_000
    )


def test_the_recorders_direct_insert_stores_what_sqlalchemy_core_stores(server: Server) -> None:
    """``UsageRecords.insert_many`` hands records straight to the driver: the same values stored
    that way and through SQLAlchemy Core read back the same, column for column, raw (the text SQLite
    holds, the values PostgreSQL returns) and through the ORM."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert, select, text

    key = create_key(server)
    whole = datetime.now(UTC).replace(microsecond=0)  # stored with its fraction, ".000000", as Core stores it
    at = whole + timedelta(microseconds=5)  # a zero-padded fraction
    base: dict[str, Any] = dict(
        organization_id=server.organization["id"], workspace_id=key["scope"]["workspace_id"], api_key_id=key["id"],
        model=MODEL, service_tier="standard", inference_geo="global", context_window="0-200k", speed="standard",
        endpoint="messages", stream=True, completed=False, usage_estimated=True, user_id=None, input_tokens=3,
        output_tokens=4,
        cache_creation_5m_tokens=5, cache_creation_1h_tokens=6, cache_read_tokens=7, web_search_requests=8,
        cost_picodollars=10**18 + 7, status=499, latency_ms=12, created_at=at,
        claude_code_session_id="6f1b0c2e-session", claude_code_agent_id=None,
    )  # fmt: skip

    async def write_and_read(uow: UnitOfWork, direct: str, core: str, row: dict[str, Any]) -> list[Any]:
        session = uow.usage.session
        await uow.usage.insert_many([{"id": direct, **row}])
        await session.execute(insert(UsageRecord), [{"id": core, **row}])
        await uow.commit()
        raw = await session.execute(
            text("SELECT * FROM usage_records WHERE id IN (:a, :b) ORDER BY id = :b"), {"a": direct, "b": core}
        )
        orm = await session.scalars(select(UsageRecord).where(UsageRecord.id.in_([direct, core])))
        return [[tuple(row)[1:] for row in raw], {row.id: row for row in orm}]

    for created_at in (at, whole):
        direct, core = unique("req_direct"), unique("req_core")
        raw, orm = query_db(
            server.db, partial(write_and_read, direct=direct, core=core, row={**base, "created_at": created_at})
        )
        assert raw[0] == raw[1]
        columns = [c.name for c in UsageRecord.__table__.columns if c.name != "id"]
        assert [getattr(orm[direct], c) for c in columns] == [getattr(orm[core], c) for c in columns]
        assert orm[direct].created_at == created_at


def test_output_is_capped_by_max_tokens_and_metered_as_delivered(server: Server, key: dict[str, Any]) -> None:
    with server.http(key["key"]) as http:
        response = http.post(
            "/v1/messages", json={**REQUEST, "max_tokens": 25}, headers={"anthropic-simulator-output-tokens": "100"}
        )
    assert response.json()["stop_reason"] == "max_tokens"
    record = wait_for_records(server, [response.headers["request-id"]])[response.headers["request-id"]]
    assert record.output_tokens == 25
    assert record.cost_picodollars == picodollars(input=record.input_tokens, output=25)


def test_a_streamed_message_is_metered_from_message_start_and_the_last_message_delta(server: Server) -> None:
    key = create_key(server)
    with server.http(key["key"]) as http:
        response = http.post(
            "/v1/messages", json={**REQUEST, "stream": True}, headers={"anthropic-simulator-output-tokens": "33"}
        )
    assert response.status_code == 200
    start, output, names = sse_usage(response.content)
    assert names[-1] == "message_stop"
    assert start["output_tokens"] == 1
    assert output == 33
    (record,) = records_of_key(server, key["id"], 1)
    assert record.id == response.headers["request-id"]
    assert_common(record, server, key, stream=True)
    assert (record.input_tokens, record.output_tokens) == (start["input_tokens"], 33)
    assert (record.status, record.completed) == (200, True)
    assert record.cost_picodollars == picodollars(input=start["input_tokens"], output=33)


def test_the_sdk_stream_is_metered_like_the_final_message_it_assembles(server: Server, key: dict[str, Any]) -> None:
    client = anthropic.Anthropic(
        api_key=key["key"], base_url=server.base_url, max_retries=0, http_client=SdkHttpClient()
    )
    with client.messages.stream(**REQUEST, extra_headers={"anthropic-simulator-output-tokens": "64"}) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]
    record = wait_for_records(server, [request_id])[request_id]
    assert (record.input_tokens, record.output_tokens) == (final.usage.input_tokens, final.usage.output_tokens) == (
        final.usage.input_tokens, 64)  # fmt: skip
    assert record.cost_picodollars == picodollars(input=final.usage.input_tokens, output=64)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_cache_writes_are_metered_and_priced_per_ttl(server: Server, key: dict[str, Any], stream: bool) -> None:
    with server.http(key["key"]) as http:
        response = http.post(
            "/v1/messages", json=cached_request(stream=stream), headers={"anthropic-simulator-output-tokens": "10"}
        )
    assert response.status_code == 200
    usage = sse_usage(response.content)[0] if stream else response.json()["usage"]
    five, hour = (
        usage["cache_creation"]["ephemeral_5m_input_tokens"],
        usage["cache_creation"]["ephemeral_1h_input_tokens"],
    )
    assert five > 0
    assert hour > 0
    assert usage["cache_creation_input_tokens"] == five + hour
    assert usage["cache_read_input_tokens"] == 0
    record = wait_for_records(server, [response.headers["request-id"]])[response.headers["request-id"]]
    assert_common(record, server, key, stream=stream)
    assert record.input_tokens == usage["input_tokens"]
    assert (record.cache_creation_5m_tokens, record.cache_creation_1h_tokens, record.cache_read_tokens) == (
        five,
        hour,
        0,
    )
    assert record.output_tokens == 10
    expected = picodollars(input=usage["input_tokens"], output=10, write_5m=five, write_1h=hour)
    assert record.cost_picodollars == expected
    # a 1-hour write costs more than a 5-minute one, which costs more than plain input
    assert picodollars(write_1h=hour) > picodollars(write_5m=hour) > picodollars(input=hour)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_cache_reads_are_metered_at_a_tenth_of_the_input_price(
    server: Server, key: dict[str, Any], stream: bool
) -> None:
    headers = {"anthropic-simulator-cache": "read", "anthropic-simulator-output-tokens": "10"}
    with server.http(key["key"]) as http:
        response = http.post("/v1/messages", json=cached_request(stream=stream), headers=headers)
    usage = sse_usage(response.content)[0] if stream else response.json()["usage"]
    read = usage["cache_read_input_tokens"]
    assert read > 0
    assert usage["cache_creation_input_tokens"] == 0
    record = wait_for_records(server, [response.headers["request-id"]])[response.headers["request-id"]]
    assert (record.cache_creation_5m_tokens, record.cache_creation_1h_tokens, record.cache_read_tokens) == (0, 0, read)
    assert record.input_tokens == usage["input_tokens"]
    assert record.cost_picodollars == picodollars(input=usage["input_tokens"], output=10, read=read)
    assert picodollars(read=read) * 10 == picodollars(input=read)


def test_a_us_inference_geo_is_recorded_and_priced_at_the_geo_multiplier(server: Server) -> None:
    workspace = anthropic.Anthropic(
        api_key=server.admin_key, base_url=server.base_url, http_client=SdkHttpClient()
    ).organization.workspaces.create(
        name=unique("us"),
        data_residency={"workspace_geo": "us", "allowed_inference_geos": ["us"], "default_inference_geo": "us"},
    )
    key = create_key(server, workspace.id)
    with server.http(key["key"]) as http:
        response = http.post("/v1/messages", json=REQUEST, headers={"anthropic-simulator-output-tokens": "20"})
    assert response.status_code == 200, response.text
    (record,) = records_of_key(server, key["id"], 1)
    assert (record.inference_geo, record.workspace_id) == ("us", workspace.id)
    assert record.cost_picodollars == picodollars(input=record.input_tokens, output=20, factor="1.1")


def test_web_search_requests_are_metered_at_ten_dollars_per_thousand(server: Server, key: dict[str, Any]) -> None:
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]
    with server.http(key["key"]) as http:
        response = http.post("/v1/messages", json={**REQUEST, "tools": tools})
    assert response.json()["usage"]["server_tool_use"]["web_search_requests"] == 1
    record = wait_for_records(server, [response.headers["request-id"]])[response.headers["request-id"]]
    assert record.web_search_requests == 1
    search = 10 * 10**12 // 1000  # $10 per 1,000 searches
    assert record.cost_picodollars == picodollars(input=record.input_tokens, output=record.output_tokens) + search


def test_count_tokens_and_models_requests_each_make_one_record_that_costs_nothing(server: Server) -> None:
    key = create_key(server)
    with server.http(key["key"]) as http:
        responses = [
            http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": MESSAGES}),
            http.get("/v1/models"),
            http.get(f"/v1/models/{MODEL}"),
        ]
    assert [r.status_code for r in responses] == [200, 200, 200]
    records = {r.id: r for r in records_of_key(server, key["id"], 3)}
    endpoints = [records[r.headers["request-id"]].endpoint for r in responses]
    assert endpoints == ["count_tokens", "models", "model"]
    for record in records.values():
        assert (record.status, record.output_tokens, record.cost_picodollars) == (200, 0, 0)


# --------------------------------------------------------------------------------------------------
# failed and refused requests


@pytest.mark.parametrize("fault", ["500", "529"])
def test_an_upstream_error_makes_one_record_with_its_status_and_no_cost(server: Server, fault: str) -> None:
    key = create_key(server)
    with server.http(key["key"]) as http:
        plain = http.post("/v1/messages", json=REQUEST, headers={"anthropic-simulator-fault": fault})
        streamed = http.post(
            "/v1/messages", json={**REQUEST, "stream": True}, headers={"anthropic-simulator-fault": fault}
        )
    assert plain.status_code == streamed.status_code == int(fault)
    records = {r.id: r for r in records_of_key(server, key["id"], 2)}
    for response, stream in ((plain, False), (streamed, True)):
        record = records[response.headers["request-id"]]
        assert_common(record, server, key, stream=stream)
        assert (record.status, record.completed) == (int(fault), False)
        tokens = (record.input_tokens, record.output_tokens, record.cache_creation_5m_tokens,
                  record.cache_creation_1h_tokens, record.cache_read_tokens)  # fmt: skip
        assert tokens == (0, 0, 0, 0, 0)
        assert record.cost_picodollars == 0


def test_an_upstream_refusal_without_usage_makes_no_record(server: Server) -> None:
    """Issue 17 point 4: a 4xx the upstream answered before generating anything is no usage."""
    key = create_key(server)
    with server.http(key["key"]) as http:
        plain = http.post("/v1/messages", json=REQUEST, headers={"anthropic-simulator-fault": "429"})
        streamed = http.post(
            "/v1/messages", json={**REQUEST, "stream": True}, headers={"anthropic-simulator-fault": "429"}
        )
        answered = http.post("/v1/messages", json=REQUEST)
    assert (plain.status_code, streamed.status_code, answered.status_code) == (429, 429, 200)
    (record,) = records_of_key(server, key["id"], 1)  # the answered one only
    assert record.id == answered.headers["request-id"]


def test_a_stream_cut_by_the_upstream_is_metered_with_what_was_delivered(server: Server) -> None:
    key = create_key(server)
    headers = {"anthropic-simulator-fault": "cut", "anthropic-simulator-output-tokens": "40"}
    with server.http(key["key"]) as http:
        response = http.post("/v1/messages", json={**REQUEST, "stream": True}, headers=headers)
    start, _, names = sse_usage(response.content)
    assert names[-1] == "error"
    (record,) = records_of_key(server, key["id"], 1)
    assert (record.status, record.completed, record.stream, record.usage_estimated) == (502, False, True, True)
    assert record.input_tokens == start["input_tokens"] > 0
    # no message_delta: estimated from the content relayed, never message_start's 1 (domain.tokens)
    assert names.count("content_block_delta") <= record.output_tokens <= REQUEST["max_tokens"]
    assert record.cost_picodollars == picodollars(input=record.input_tokens, output=record.output_tokens)


def test_requests_refused_before_the_upstream_make_no_record(server: Server) -> None:
    key = create_key(server)
    other = anthropic.Anthropic(
        api_key=server.admin_key, base_url=server.base_url, http_client=SdkHttpClient()
    ).organization.workspaces.create(name=unique("other"))
    restricted = anthropic.Anthropic(
        api_key=server.admin_key, base_url=server.base_url, http_client=SdkHttpClient()
    ).organization.workspaces.create(
        name=unique("eu"),
        data_residency={"workspace_geo": "us", "allowed_inference_geos": ["us"], "default_inference_geo": "us"},
    )
    restricted_key = create_key(server, restricted.id)
    refused = []
    with server.http(key["key"]) as http:
        refused.append(http.post("/v1/messages", json=REQUEST, headers={"anthropic-workspace-id": other.id}))  # 403
        refused.append(http.post("/v1/messages", content=b"{oops", headers={"content-type": "application/json"}))
        refused.append(http.post("/v1/messages", json=REQUEST, headers={"x-api-key": "sk-ant-api03-unknown"}))
        refused.append(http.post("/v1/messages", json=REQUEST, headers={"x-api-key": server.admin_key}))
        refused.append(http.post("/v1/messages", json=REQUEST, headers={"anthropic-allowed-org-ids": "not-a-uuid"}))
        refused.append(
            http.post(
                "/v1/messages",
                json={**REQUEST, "inference_geo": "global"},
                headers={"x-api-key": restricted_key["key"]},
            )
        )
        refused.append(http.post("/v1/complete", json=REQUEST))
        passed = http.post("/v1/messages", json=REQUEST)
    assert [r.status_code for r in refused] == [403, 400, 401, 403, 400, 400, 404]
    assert passed.status_code == 200
    # the recorder writes in order: once the later request is recorded, an earlier one would be too
    (record,) = records_of_key(server, key["id"], 1)
    assert record.id == passed.headers["request-id"]
    records = read_records(server)
    for response in refused:
        assert response.headers["request-id"] not in records
    assert not [r for r in records.values() if r.api_key_id == restricted_key["id"]]


# --------------------------------------------------------------------------------------------------
# a slow upstream: streams aborted by the client


@pytest.fixture(scope="module")
def slow_server() -> Iterator[Server]:
    """The simulator streaming 20 tokens a second: a 100-token answer takes 5 s."""
    with dedicated_server("sqlite", {"ORGWARDEN_SIMULATOR_TOKENS_PER_SECOND": "20"}) as srv:
        yield srv


def test_a_stream_the_client_aborts_is_metered_with_what_was_delivered(slow_server: Server) -> None:
    key = create_key(slow_server)
    headers = {"anthropic-simulator-output-tokens": "100"}
    with slow_server.http(key["key"]) as http:
        started = time.monotonic()
        with http.stream("POST", "/v1/messages", json={**REQUEST, "stream": True}, headers=headers) as response:
            assert response.status_code == 200
            request_id = response.headers["request-id"]
            events = 0
            for line in response.iter_lines():
                events += line.startswith("event: ")
                if events == 5:  # message_start, content_block_start, ping and two deltas
                    break
        assert time.monotonic() - started < 2
    (record,) = records_of_key(slow_server, key["id"], 1)
    assert record.id == request_id
    assert (record.status, record.completed, record.stream, record.usage_estimated) == (499, False, True, True)
    assert record.input_tokens > 0
    assert 2 <= record.output_tokens < 100  # at least the two deltas the client read
    assert record.cost_picodollars == picodollars(input=record.input_tokens, output=record.output_tokens)


def test_an_sdk_stream_closed_early_is_metered_as_aborted(slow_server: Server) -> None:
    key = create_key(slow_server)
    client = anthropic.Anthropic(
        api_key=key["key"], base_url=slow_server.base_url, max_retries=0, http_client=SdkHttpClient()
    )
    with client.messages.stream(**REQUEST, extra_headers={"anthropic-simulator-output-tokens": "100"}) as stream:  # type: ignore[arg-type]
        request_id = stream.response.headers["request-id"]
        for count, _ in enumerate(stream, start=1):
            if count == 4:
                break
    record = wait_for_records(slow_server, [request_id])[request_id]
    assert (record.status, record.completed) == (499, False)
    assert record.output_tokens < 100


# --------------------------------------------------------------------------------------------------
# SIGTERM under load


@pytest.mark.parametrize(("backend", "workers"), [("sqlite", "1"), ("sqlite", "2"), ("postgres", "2")])
def test_a_sigterm_under_load_loses_no_usage_record(tmp_path: Path, backend: str, workers: str) -> None:
    assert backend in BACKENDS
    db = make_database(backend, tmp_path)
    # 20 threads x 15 requests: about 3.75 s of load, so that it outlasts even a slow shutdown on a
    # busy machine (with 100 ms it once ended first: "nothing was under load at shutdown")
    db.env["ORGWARDEN_SIMULATOR_LATENCY_MS"] = "250"
    if workers != "1":
        db.env.update(redis_settings())  # several workers share their limit counters in Redis
    srv = start_server(db, tmp_path, "--workers", workers)
    try:
        key = create_key(srv)
        outcomes: list[tuple[int, str]] = []  # (status, request id) of every answered request
        failures: list[str] = []
        lock = threading.Lock()

        def load() -> None:
            with srv.http(key["key"]) as http:
                for _ in range(15):
                    try:
                        response = http.post("/v1/messages", json=REQUEST)
                    except httpx.HTTPError as exc:  # refused once the server stopped accepting
                        with lock:
                            failures.append(type(exc).__name__)
                        continue
                    with lock:
                        outcomes.append((response.status_code, response.headers.get("request-id", "")))

        threads = [threading.Thread(target=load) for _ in range(20)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while len(outcomes) < 40:
            assert time.monotonic() < deadline, "the load did not get going"
            time.sleep(0.005)
        answered_before = len(outcomes)
        srv.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=60)
        # uvicorn shuts down gracefully, then re-raises the signal: exit by SIGTERM is the normal end
        assert srv.process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in srv.log()
    finally:
        stop_server(srv)  # already stopped: checks the log for tracebacks
    try:
        ok = [rid for status, rid in outcomes if status == 200]
        assert len(outcomes) + len(failures) == 300
        assert len(ok) > answered_before, "no request was in flight when SIGTERM arrived"
        assert failures, "the load ended before the server stopped: nothing was under load at shutdown"
        assert all(status == 200 for status, _ in outcomes), outcomes
        records = read_records(srv)  # the server has exited: what is not written now is lost
        mine = {rid for rid, record in records.items() if record.api_key_id == key["id"]}
        missing = set(ok) - mine
        assert not missing, f"{len(missing)} of {len(ok)} answered requests have no usage record"
        assert mine == set(ok), "a record for a request that got no answer"
        print(f"\nSIGTERM ({backend}, {workers} workers): {len(ok)} answered, {len(failures)} refused, all metered")
    finally:
        drop_database(db)
