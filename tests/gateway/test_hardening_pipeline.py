"""Hardening the data-plane pipeline (issue 15): usage that cannot be dodged, spend worst cases that
are true upper bounds, data residency that cannot be bypassed, JSON too deep refused with a 400,
keyless refusals audited at a bounded rate with capped details.

Every test here is a reproduction from the issue: it failed on the code before the change.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx
import pytest

from orgwarden.config import load_settings
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.tables import AuditEvent, UsageRecord
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory
from tests.conftest import TLS, SdkHttpClient, Server, assert_error, dedicated_server, query_db, unique

HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-6"
HAIKU_INPUT = 10**6  # picodollars a token: $1 per million
HAIKU_OUTPUT = 5 * 10**6  # $5 per million
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "Tell me a long story."}]
TOO_DEEP = "nested too deeply"


def create_key(server: Server, workspace_id: str | None = None) -> dict[str, Any]:
    with server.http() as http:
        response = http.post(
            "/v1/organizations/api_keys", json={"name": unique("harden"), "workspace_id": workspace_id}
        )
    assert response.status_code == 200, response.text
    return dict(response.json())


def record_of(server: Server, request_id: str, timeout: float = 5.0) -> UsageRecord:
    async def read(uow: UnitOfWork) -> dict[str, UsageRecord]:
        return {row.id: row for row in await uow.usage.for_organization(server.organization["id"])}

    deadline = time.monotonic() + timeout
    while True:
        records = query_db(server.db, read)
        if request_id in records:
            return records[request_id]
        assert time.monotonic() < deadline, f"no usage record for {request_id} after {timeout}s"
        time.sleep(0.1)


def headers(key: str, **extra: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": "2023-06-01", **extra}


# --------------------------------------------------------------------------------------------------
# 1. metering that cannot be dodged


@pytest.fixture(scope="module")
def streaming_server() -> Iterator[Server]:
    """The simulator streaming 1,000 tokens a second, so that a client can leave early on, with
    seconds to spare even when the machine is busy (the client must leave before the end comes)."""
    with dedicated_server("sqlite", {"ORGWARDEN_SIMULATOR_TOKENS_PER_SECOND": "1000"}) as srv:
        yield srv


def set_org_output_limit(server: Server, key: str, value: int) -> None:
    """The organization's output-tokens-per-minute limit of HAIKU's group, waited for until in force."""
    with server.http() as http:
        entry = http.get("/v1/organizations/rate_limits", params={"model": HAIKU}).json()["data"][0]
        response = http.post(
            f"/v1/organizations/rate_limits/{entry['id']}",
            json={"limits": [{"type": "output_tokens_per_minute", "value": value}]},
        )
        assert response.status_code == 200, response.text
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as http:
        while True:
            body = {"model": HAIKU, "max_tokens": 1, "messages": MESSAGES}
            probe = http.post("/v1/messages", json=body, headers=headers(key))
            if probe.headers.get("anthropic-ratelimit-output-tokens-limit") == str(value):
                return
            assert time.monotonic() < deadline, "the output-token limit did not come into force"
            time.sleep(0.2)


def test_a_stream_left_before_message_delta_is_metered_and_charged_for_the_content_relayed(
    streaming_server: Server,
) -> None:
    """The issue's reproduction: a 5,000-token answer, the client reads 1,000 content deltas and
    leaves. It was recorded with message_start's 1 output token and its whole reservation handed
    back; now it is recorded (marked estimated) and charged at least what the client received."""
    server = streaming_server
    key = create_key(server)["key"]
    limit, first_max, second_max = 10_000, 6_000, 1_000
    set_org_output_limit(server, key, limit)
    body = {"model": HAIKU, "max_tokens": first_max, "messages": MESSAGES, "stream": True}
    received = 0
    started = time.monotonic()
    with httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as http:
        sent = headers(key, **{"anthropic-simulator-output-tokens": "5000"})
        with http.stream("POST", "/v1/messages", json=body, headers=sent) as response:
            assert response.status_code == 200
            request_id = response.headers["request-id"]
            for line in response.iter_lines():
                assert not line.startswith("event: message_delta"), "the stream ended before the client left"
                received += line.startswith("event: content_block_delta")
                if received == 1_000:
                    break
    with httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as http:
        second = {"model": HAIKU, "max_tokens": second_max, "messages": MESSAGES}
        answer = http.post("/v1/messages", json=second, headers=headers(key))
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text

    record = record_of(server, request_id)
    assert (record.status, record.completed, record.usage_estimated) == (499, False, True)
    assert received <= record.output_tokens <= first_max
    assert record.input_tokens > 0
    assert record.cost_picodollars == record.input_tokens * HAIKU_INPUT + record.output_tokens * HAIKU_OUTPUT
    # The output-token bucket kept what the aborted stream used: after the second request reserved
    # its max_tokens, at most limit - received - second_max is left, plus what refilled meanwhile.
    refill = math.ceil(limit / 60 * elapsed)
    remaining = int(answer.headers["anthropic-ratelimit-output-tokens-remaining"])
    assert remaining <= limit - received - second_max + refill, (remaining, received, refill)


def test_a_completed_stream_is_metered_with_the_upstreams_count_not_an_estimate(streaming_server: Server) -> None:
    key = create_key(streaming_server)["key"]
    client = anthropic.Anthropic(
        api_key=key, base_url=streaming_server.base_url, max_retries=0, http_client=SdkHttpClient()
    )
    extra = {"anthropic-simulator-output-tokens": "300"}
    with client.messages.stream(model=HAIKU, max_tokens=1000, messages=MESSAGES, extra_headers=extra) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]
    record = record_of(streaming_server, request_id)
    assert (record.status, record.completed, record.usage_estimated) == (200, True, False)
    assert record.output_tokens == final.usage.output_tokens == 300


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with dedicated_server("sqlite", {}) as srv:
        yield srv


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def any_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with dedicated_server(request.param, {}) as srv:
        yield srv


def test_a_json_answer_cut_half_way_is_metered_from_what_arrived_and_marked_estimated(any_server: Server) -> None:
    """The simulator's ``cut`` sends the first half of the Message (the usage, which comes last, is
    not in it) and the gateway relays it as it came. It was recorded with no tokens at all; now with
    the input estimated from the request and the output from the half that came, marked estimated
    (both databases store the flag)."""
    key = create_key(any_server)["key"]
    body = {"model": HAIKU, "max_tokens": 500, "messages": MESSAGES}
    extra = {"anthropic-simulator-fault": "cut", "anthropic-simulator-output-tokens": "400"}
    with httpx.Client(base_url=any_server.base_url, timeout=30, verify=TLS) as http:
        response = http.post("/v1/messages", json=body, headers=headers(key, **extra))
    assert response.status_code == 200
    assert b'"usage"' not in response.content
    record = record_of(any_server, response.headers["request-id"])
    assert (record.status, record.completed, record.usage_estimated) == (200, False, True)
    assert record.input_tokens > 0
    assert 100 <= record.output_tokens <= 500  # half of a 400-word answer, at three bytes a token
    assert record.cost_picodollars == record.input_tokens * HAIKU_INPUT + record.output_tokens * HAIKU_OUTPUT
    # the usage report counts the estimated request in its bucket (rolled up with the record)
    today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    with any_server.http() as http:
        report = http.get("/v1/organizations/usage_report/messages", params={"starting_at": today}).json()
    (result,) = report["data"][0]["results"]
    assert result["estimated_requests"] == 1
    assert result["output_tokens"] >= record.output_tokens


# --------------------------------------------------------------------------------------------------
# 2. spend worst case


@pytest.fixture(scope="module")
def slow_server() -> Iterator[Server]:
    """The simulator answering after a second, so that concurrent requests are all in flight."""
    with dedicated_server("sqlite", {"ORGWARDEN_SIMULATOR_LATENCY_MS": "1000"}) as srv:
        yield srv


def test_concurrent_requests_with_a_url_image_cannot_all_pass_a_spend_limit(slow_server: Server) -> None:
    """A URL image's tokens are not in the body: the worst case is the model's context window
    (200,000 tokens of claude-haiku-4-5: 20 cents), not the body's bytes (well under a cent). With
    a 25-cent limit, one of eight concurrent requests passes; before, all eight did."""
    server = slow_server
    workspace = anthropic.Anthropic(
        api_key=server.admin_key, base_url=server.base_url, http_client=SdkHttpClient()
    ).organization.workspaces.create(name=unique("spend"))
    key = create_key(server, workspace.id)["key"]
    spend = {"amount": "25", "period": "daily", "scope": {"type": "workspace", "workspace_id": workspace.id}}
    with server.http() as http:
        assert http.post("/v1/organizations/spend_limits", json=spend).status_code == 200
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/large.png"}}
    body = {"model": HAIKU, "max_tokens": 16, "messages": [{"role": "user", "content": [image]}]}
    time.sleep(1.5)  # the limit is in force within a second

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as http:
            return http.post("/v1/messages", json=body, headers=headers(key))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [400] * 7, [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 400)
    assert_error(refused, 400, "invalid_request_error", "You have reached your specified workspace API usage limits")


def test_a_web_search_without_max_uses_is_refused_while_a_spend_limit_applies(server: Server) -> None:
    workspace = anthropic.Anthropic(
        api_key=server.admin_key, base_url=server.base_url, http_client=SdkHttpClient()
    ).organization.workspaces.create(name=unique("search"))
    key = create_key(server, workspace.id)["key"]
    spend = {"amount": "5000", "period": "monthly", "scope": {"type": "workspace", "workspace_id": workspace.id}}
    with server.http() as http:
        assert http.post("/v1/organizations/spend_limits", json=spend).status_code == 200
    time.sleep(1.5)
    tool = {"type": "web_search_20250305", "name": "web_search"}
    body = {"model": HAIKU, "max_tokens": 16, "messages": MESSAGES, "tools": [tool]}
    with httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as http:
        unbounded = http.post("/v1/messages", json=body, headers=headers(key))
        bounded = http.post("/v1/messages", json={**body, "tools": [{**tool, "max_uses": 3}]}, headers=headers(key))
    assert_error(unbounded, 400, "invalid_request_error", "web_search tool without max_uses")
    assert bounded.status_code == 200, bounded.text


# --------------------------------------------------------------------------------------------------
# 3. data residency


@pytest.fixture(scope="module")
def us_key(server: Server) -> dict[str, Any]:
    workspace = anthropic.Anthropic(
        api_key=server.admin_key, base_url=server.base_url, http_client=SdkHttpClient()
    ).organization.workspaces.create(
        name=unique("us"),
        data_residency={"workspace_geo": "us", "allowed_inference_geos": ["us"], "default_inference_geo": "us"},
    )
    return create_key(server, workspace.id)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        pytest.param(b'{"inference_geo": null, "model": "%s"', "null is not allowed", id="null"),
        pytest.param(b'{"inference_geo": "us", "model": "%s", "inference_geo": null', "more than once", id="twice"),
        pytest.param(
            b'{"inference_geo": "us", "model": "%s", "inference\\u005fgeo": "global"', "more than once", id="escaped"
        ),
    ],
)
def test_a_body_that_could_dodge_the_workspaces_geo_is_refused_naming_the_field(
    server: Server, us_key: dict[str, Any], raw: bytes, problem: str
) -> None:
    """``"inference_geo": null`` was taken as absent and the default prepended, so the upstream read
    the key twice, null last; a key named twice was checked by its last value only."""
    body = raw % HAIKU.encode() + b', "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}'
    with httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as http:
        response = http.post(
            "/v1/messages", content=body, headers={**headers(us_key["key"]), "content-type": "application/json"}
        )
    error = assert_error(response, 400, "invalid_request_error", problem)
    assert error["error"]["message"].startswith("inference_geo: ")


# --------------------------------------------------------------------------------------------------
# 4. JSON nested too deeply


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_json_nested_too_deeply_is_a_400_on_messages_telemetry_and_the_admin_api(server: Server) -> None:
    key = create_key(server)["key"]
    deep_messages = b'{"model": "%s", "max_tokens": 8, "messages": %s}' % (HAIKU.encode(), nested(2000))
    deep_otlp = b'{"resourceMetrics": %s}' % nested(2000)
    almost = b'{"model": "%s", "max_tokens": 8, "messages": %s}' % (HAIKU.encode(), nested(990))
    json_headers = {**headers(key), "content-type": "application/json"}
    admin_headers = {**headers(server.admin_key), "content-type": "application/json"}
    with httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as http:
        messages = http.post("/v1/messages", content=deep_messages, headers=json_headers)
        telemetry = http.post("/v1/metrics", content=deep_otlp, headers=json_headers)
        counted = http.post("/v1/messages/count_tokens", content=deep_messages, headers=json_headers)  # simulator
        admin = http.post(
            "/v1/organizations/workspaces",
            content=nested(2000),
            headers=admin_headers,
        )
        admin_object = http.post(
            "/v1/organizations/workspaces",
            content=b'{"name": %s}' % nested(2000),
            headers=admin_headers,
        )
        deep_cursor = base64.urlsafe_b64encode(b"ow1:" + nested(5000)).decode().rstrip("=")
        cursor = http.get(
            "/v1/organizations/usage_report/claude_code",
            params={"starting_at": "2025-08-08", "page": deep_cursor},
            headers=admin_headers,
        )
        # 990 levels: orjson parses it, the standard library's residency check must not blow up
        geo_twice = almost.replace(b"{", b'{"inference_geo": "global", "inference_geo": "global", ', 1)
        near_limit = http.post("/v1/messages", content=geo_twice, headers=json_headers)
    assert_error(messages, 400, "invalid_request_error", TOO_DEEP)
    assert_error(telemetry, 400, "invalid_request_error", TOO_DEEP)
    assert counted.status_code == 400, counted.text  # the upstream's answer, relayed
    assert TOO_DEEP in counted.json()["error"]["message"]
    assert_error(admin, 400, "invalid_request_error", TOO_DEEP)
    assert_error(admin_object, 400, "invalid_request_error", TOO_DEEP)
    assert_error(cursor, 400, "invalid_request_error", "is not a cursor from this report")
    assert near_limit.status_code == 400, near_limit.text
    assert near_limit.json()["type"] == "error"
    assert "Traceback" not in server.log()


# --------------------------------------------------------------------------------------------------
# 5. keyless refusals: bounded rate, capped details


def tenant_events(server: Server) -> list[AuditEvent]:
    settings = load_settings(**server.db.settings_kwargs)

    async def run() -> list[AuditEvent]:
        engine = create_engine(settings)
        try:
            async with UnitOfWorkFactory(session_factory(engine))() as uow:
                events = await uow.audit.all(server.organization["id"])
        finally:
            await engine.dispose()
        return [e for e in events if e.action == "tenant_restriction.check"]

    return asyncio.run(run())


@pytest.fixture
def quiet_server() -> Iterator[Server]:
    with dedicated_server("sqlite", {}) as srv:
        yield srv


def test_keyless_refusals_in_a_burst_are_audited_at_a_bounded_rate(quiet_server: Server) -> None:
    server = quiet_server
    before = len(tenant_events(server))
    started = time.monotonic()

    def one(i: int) -> int:
        with httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as http:
            sent = {"anthropic-version": "2023-06-01", "anthropic-allowed-org-ids": f"not-a-uuid-{i}"}
            return http.get("/v1/models", headers=sent).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(200)))
    elapsed = time.monotonic() - started
    assert statuses == [400] * 200
    time.sleep(1.5)  # flushed, and the summary logged
    written = len(tenant_events(server)) - before
    bound = 20 + math.ceil(10 * elapsed)  # burst + rate x time (restriction.KEYLESS_AUDIT*)
    assert 1 <= written <= bound, (written, bound, elapsed)
    assert "keyless refusals in the last second were not audited" in server.log()


def test_a_keyless_refusal_with_a_long_path_and_header_is_audited_with_both_capped(quiet_server: Server) -> None:
    """A long path and header made a row twice their size (200 KB in, 400 KB stored). Sizes here stay
    under common header limits so that the request reaches the pipeline on any server layer."""
    server = quiet_server
    long_id = "x" * 6000
    with httpx.Client(base_url=server.base_url, timeout=30, verify=TLS) as http:
        response = http.get(
            f"/v1/models/{'m' * 6000}",
            headers={"anthropic-version": "2023-06-01", "anthropic-allowed-org-ids": long_id},
        )
    body = assert_error(response, 400, "invalid_request_error", "anthropic-allowed-org-ids")
    assert len(body["error"]["message"]) < 700
    deadline = time.monotonic() + 5
    while not (found := [e for e in tenant_events(server) if e.request_id == response.headers["request-id"]]):
        assert time.monotonic() < deadline, "no audit event"
        time.sleep(0.1)
    (event,) = found
    assert len(json.dumps(event.details)) < 1500
    assert event.details["path"].startswith("/v1/models/mmm")
    assert event.details["path"].endswith("more characters]")
    assert event.details["error"] == body["error"]["message"]
