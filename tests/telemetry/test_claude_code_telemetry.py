"""Claude Code telemetry, end to end: real OTLP exports into a real server, then the report figure by figure.

Per backend, one server receives what three Claude Code users would send, built with the
OpenTelemetry SDK (a MeterProvider with Claude Code's instrument names and attributes):

* alice (a user, OAuth): OTLP/protobuf, gzip, delta temporality, through the SDK's OTLP/HTTP
  exporter configured only by ``OTEL_EXPORTER_OTLP_ENDPOINT`` and ``OTEL_EXPORTER_OTLP_HEADERS``, as
  the README tells Claude Code users; two exports, two sessions, two models, five tools;
* bob (a user): OTLP/protobuf, cumulative temporality, ``Authorization: Bearer``; the same totals
  exported again unchanged, then grown, then a restarted exporter (a new start time: a reset);
* ci-bot (an API key without a user): OTLP/JSON (the SDK's encoder, then protobuf's JSON mapping),
  sent twice (a retry must not count twice), plus a gzip OTLP/JSON export dated yesterday written
  with the encoding's quirks (numeric enums, unknown fields).

Every figure is then checked, for today and for yesterday, with paging and every refusal.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

from tests.conftest import BACKENDS, TLS, Server, assert_error, dedicated_server

REPORT = "/v1/organizations/usage_report/claude_code"
SONNET, HAIKU, OPUS = "claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6"
ALICE, BOB = "alice@acme.test", "bob@acme.test"
MAX_BODY = 65_536  # the server's max_request_bytes in this module
RESOURCE = Resource.create({"service.name": "claude-code", "service.version": "2.0.14", "os.type": "darwin"})
NO_TOOLS = {
    "edit_tool": {"accepted": 0, "rejected": 0},
    "multi_edit_tool": {"accepted": 0, "rejected": 0},
    "notebook_edit_tool": {"accepted": 0, "rejected": 0},
    "write_tool": {"accepted": 0, "rejected": 0},
}


class ClaudeCode:
    """A MeterProvider with Claude Code's instruments, read on demand (no background thread)."""

    def __init__(self, temporality: AggregationTemporality, **standard: str) -> None:
        self.reader = InMemoryMetricReader(preferred_temporality={Counter: temporality})
        self.provider = MeterProvider(metric_readers=[self.reader], resource=RESOURCE)
        meter = self.provider.get_meter("com.anthropic.claude_code", "2.0.14")
        self.standard = {"organization.id": "anthropic-org-uuid", **standard}
        self.counters = {
            name: meter.create_counter(f"claude_code.{name}", unit=unit)
            for name, unit in [
                ("session.count", "count"), ("lines_of_code.count", "count"), ("commit.count", "count"),
                ("pull_request.count", "count"), ("cost.usage", "USD"), ("token.usage", "tokens"),
                ("code_edit_tool.decision", "count"), ("active_time.total", "s"),
            ]
        }  # fmt: skip
        self.other = meter.create_counter("http.client.requests")  # not Claude Code's: ignored

    def add(self, name: str, value: float, **attributes: str) -> None:
        self.counters[name].add(value, {**self.standard, **attributes})

    def tokens(self, model: str, **by_type: int) -> None:
        for kind, count in by_type.items():
            self.add("token.usage", count, type=kind, model=model)

    def decide(self, tool: str, decision: str, times: int = 1) -> None:
        for _ in range(times):
            self.add("code_edit_tool.decision", 1, tool_name=tool, decision=decision, language="Python")

    def collect(self) -> Any:
        return self.reader.get_metrics_data()


def export(exporter: OTLPMetricExporter, data: Any) -> None:
    assert exporter.export(data) == MetricExportResult.SUCCESS


def post(server: Server, key: str, body: bytes, content_type: str, path: str = "/v1/metrics", **headers: str) -> Any:
    return httpx.post(
        server.base_url + path,
        content=body,
        headers={"content-type": content_type, "x-api-key": key, **headers},
        verify=TLS,
    )


def as_json(request: ExportMetricsServiceRequest) -> bytes:
    return json_format.MessageToJson(request).encode()


def create_key(server: Server, name: str) -> dict[str, Any]:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": name})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@dataclass
class Scene:
    server: Server
    today: str
    yesterday: str
    keys: dict[str, dict[str, Any]]


def send_alice(server: Server, key: str) -> None:
    """Delta, protobuf, gzip; the exporter configured from the environment, as Claude Code is."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": server.base_url, "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={key}"}
    with mock.patch.dict(os.environ, env):
        exporter = OTLPMetricExporter(compression=Compression.Gzip)
    alice = ClaudeCode(AggregationTemporality.DELTA, **{"user.email": ALICE, "user.account_uuid": "acct-alice"})
    standard = alice.standard
    alice.standard = {**standard, "session.id": "alice-1", "terminal.type": "iTerm.app"}
    alice.add("session.count", 1)
    alice.add("lines_of_code.count", 120, type="added")
    alice.add("lines_of_code.count", 30, type="removed")
    alice.add("commit.count", 2)
    alice.add("pull_request.count", 1)
    alice.tokens(SONNET, input=1000, output=500, cacheRead=2000, cacheCreation=300)
    alice.add("cost.usage", 0.0123, model=SONNET)
    alice.decide("Edit", "accept", 3)
    alice.decide("Edit", "reject")
    alice.decide("Write", "accept")
    alice.add("active_time.total", 12.5)
    alice.other.add(4)
    export(exporter, alice.collect())
    alice.standard = {**standard, "session.id": "alice-2", "terminal.type": "iTerm.app"}
    alice.add("session.count", 1)
    alice.add("lines_of_code.count", 22, type="added")
    alice.tokens(SONNET, input=230, output=50)
    alice.add("cost.usage", 0.0011, model=SONNET)
    alice.tokens(HAIKU, input=100, output=20)
    alice.add("cost.usage", 0.0004, model=HAIKU)
    alice.decide("MultiEdit", "accept")
    alice.decide("NotebookEdit", "reject")
    alice.decide("Bash", "accept")
    export(exporter, alice.collect())


def send_bob(server: Server, key: str) -> None:
    """Cumulative, protobuf, no compression, Authorization: Bearer; a repeat, growth, a restart."""
    exporter = OTLPMetricExporter(endpoint=server.base_url + "/v1/metrics", headers={"authorization": f"Bearer {key}"})
    bob = ClaudeCode(AggregationTemporality.CUMULATIVE, **{"user.email": BOB, "session.id": "bob-1"})
    bob.standard["terminal.type"] = "vscode"
    bob.add("session.count", 1)
    bob.tokens(OPUS, input=10, output=5)
    bob.add("cost.usage", 0.5, model=OPUS)
    export(exporter, bob.collect())
    export(exporter, bob.collect())  # the same totals again: nothing new
    bob.tokens(OPUS, input=10)
    bob.add("cost.usage", 0.25, model=OPUS)
    export(exporter, bob.collect())  # totals 20 input tokens, $0.75
    time.sleep(0.001)  # the restarted exporter's start time must differ
    restarted = ClaudeCode(AggregationTemporality.CUMULATIVE, **bob.standard)
    restarted.add("session.count", 1)
    restarted.add("cost.usage", 0.1, model=OPUS)
    restarted.add("commit.count", 1)
    export(exporter, restarted.collect())


def send_ci_bot(server: Server, key: str, yesterday_noon: datetime) -> None:
    """Yesterday's session first, in gzip OTLP/JSON written with the encoding's quirks; then today's,
    in OTLP/JSON from the SDK's own encoder, twice (a retried export counts once)."""
    earlier = ClaudeCode(AggregationTemporality.DELTA, **{"session.id": "ci-0", "terminal.type": "xterm"})
    earlier.add("session.count", 5)
    earlier.add("lines_of_code.count", 9, type="added")
    tree = json_format.MessageToDict(encode_metrics(earlier.collect()))
    end = int(yesterday_noon.timestamp()) * 1_000_000_000
    for metric in tree["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]:
        metric["sum"]["aggregationTemporality"] = 1  # an enum as a number, as OTLP/JSON allows
        metric["futureField"] = {"x": 1}  # unknown to this version: ignored
        for point in metric["sum"]["dataPoints"]:
            point["startTimeUnixNano"], point["timeUnixNano"] = str(end - 60_000_000_000), end
    body = gzip.compress(json.dumps(tree).encode())
    response = post(server, key, body, "application/json", **{"content-encoding": "gzip"})
    assert response.status_code == 200, response.text

    bot = ClaudeCode(AggregationTemporality.DELTA, **{"session.id": "ci-1"})
    bot.add("session.count", 3, **{"terminal.type": "xterm"})
    bot.add("commit.count", 1, **{"terminal.type": "xterm"})
    bot.add("pull_request.count", 1, **{"terminal.type": "xterm"})
    bot.tokens(HAIKU, input=7, output=3)  # no terminal.type: an "unknown" terminal with no sessions
    bot.add("cost.usage", 0.0001, model=HAIKU)
    body = as_json(encode_metrics(bot.collect()))
    for _ in range(2):
        response = post(server, key, body, "application/json")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {}


@pytest.fixture(scope="module", params=BACKENDS)
def scene(request: pytest.FixtureRequest) -> Iterator[Scene]:
    with dedicated_server(request.param, {"ORGWARDEN_MAX_REQUEST_BYTES": str(MAX_BODY)}) as server:
        keys = {name: create_key(server, name) for name in ("claude-code-alice", "claude-code-bob", "ci-bot")}
        now = datetime.now(UTC)
        yesterday_noon = datetime.combine(now.date(), datetime.min.time(), UTC) - timedelta(hours=12)
        send_alice(server, keys["claude-code-alice"]["key"])
        send_bob(server, keys["claude-code-bob"]["key"])
        send_ci_bot(server, keys["ci-bot"]["key"], yesterday_noon)
        if datetime.now(UTC).date() != now.date():
            pytest.skip("the exports ran across midnight UTC: their day is ambiguous")
        yield Scene(server, now.date().isoformat(), yesterday_noon.date().isoformat(), keys)


def report(server: Server, **params: Any) -> dict[str, Any]:
    with server.http() as http:
        response = http.get(REPORT, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def record(scene: Scene, actor: dict[str, str], **fields: Any) -> dict[str, Any]:
    """A report record with the spec's shape: zeros and empties unless given."""
    core = {"commits_by_claude_code": 0, "lines_of_code": {"added": 0, "removed": 0}, "num_sessions": 0,
            "pull_requests_by_claude_code": 0}  # fmt: skip
    core.update(fields.pop("core", {}))
    return {
        "actor": actor,
        "core_metrics": core,
        "customer_type": "api",
        "date": f"{fields.pop('day', scene.today)}T00:00:00Z",
        "model_breakdown": fields.pop("models", []),
        "organization_id": scene.server.organization["id"],
        "terminal_type": fields.pop("terminal"),
        "tool_actions": {**NO_TOOLS, **fields.pop("tools", {})},
        "subscription_type": None,
    }


def model(
    name: str, cents: float, input: int = 0, output: int = 0, cache_read: int = 0, cache_creation: int = 0
) -> Any:
    return {
        "estimated_cost": {"amount": cents, "currency": "USD"},
        "model": name,
        "tokens": {"cache_creation": cache_creation, "cache_read": cache_read, "input": input, "output": output},
    }


def expected_today(scene: Scene) -> list[dict[str, Any]]:
    ci_bot = record(
        scene, {"api_key_name": "ci-bot", "type": "api_actor"}, terminal="xterm",
        core={"num_sessions": 3, "commits_by_claude_code": 1, "pull_requests_by_claude_code": 1},
        models=[model(HAIKU, 0.01, input=7, output=3)],
    )  # fmt: skip
    alice = record(
        scene, {"email_address": ALICE, "type": "user_actor"}, terminal="iTerm.app",
        core={"num_sessions": 2, "commits_by_claude_code": 2, "pull_requests_by_claude_code": 1,
              "lines_of_code": {"added": 142, "removed": 30}},
        models=[model(HAIKU, 0.04, input=100, output=20),  # $0.0004
                model(SONNET, 1.34, input=1230, output=550, cache_read=2000, cache_creation=300)],  # $0.0123 + $0.0011
        tools={"edit_tool": {"accepted": 3, "rejected": 1}, "multi_edit_tool": {"accepted": 1, "rejected": 0},
               "notebook_edit_tool": {"accepted": 0, "rejected": 1}, "write_tool": {"accepted": 1, "rejected": 0},
               "bash_tool": {"accepted": 1, "rejected": 0}},
    )  # fmt: skip
    bob = record(
        scene, {"email_address": BOB, "type": "user_actor"}, terminal="vscode",
        core={"num_sessions": 2, "commits_by_claude_code": 1},
        models=[model(OPUS, 85, input=20, output=5)],  # $0.75 cumulative, then $0.10 after the restart
    )  # fmt: skip
    return [ci_bot, alice, bob]


# --------------------------------------------------------------------------------------------------
# the report


def test_the_report_gives_every_figure_of_every_actor_exported_in_both_encodings(scene: Scene) -> None:
    body = report(scene.server, starting_at=scene.today)
    assert body == {"data": expected_today(scene), "has_more": False, "next_page": None}
    assert isinstance(body["data"][2]["model_breakdown"][0]["estimated_cost"]["amount"], int)


def test_a_day_holds_only_what_ended_in_it(scene: Scene) -> None:
    body = report(scene.server, starting_at=scene.yesterday)
    ci_bot = record(
        scene, {"api_key_name": "ci-bot", "type": "api_actor"}, terminal="xterm", day=scene.yesterday,
        core={"num_sessions": 5, "lines_of_code": {"added": 9, "removed": 0}},
    )  # fmt: skip
    assert body == {"data": [ci_bot], "has_more": False, "next_page": None}
    assert report(scene.server, starting_at="2020-01-01") == {"data": [], "has_more": False, "next_page": None}


def test_pages_follow_next_page_in_actor_order_without_repeats_or_gaps(scene: Scene) -> None:
    seen: list[dict[str, Any]] = []
    page: str | None = None
    for expected_more in (True, True, False):
        params = {"starting_at": scene.today, "limit": 1, **({"page": page} if page else {})}
        body = report(scene.server, **params)
        assert len(body["data"]) == 1
        assert body["has_more"] is expected_more
        assert (body["next_page"] is not None) is expected_more
        seen.extend(body["data"])
        page = body["next_page"]
    assert seen == expected_today(scene)
    two = report(scene.server, starting_at=scene.today, limit=2)
    assert two["data"] == expected_today(scene)[:2]
    assert two["has_more"] is True
    rest = report(scene.server, starting_at=scene.today, limit=1000, page=two["next_page"])
    assert rest == {"data": expected_today(scene)[2:], "has_more": False, "next_page": None}


def test_the_report_refuses_bad_parameters_naming_them_and_needs_an_admin_key(scene: Scene) -> None:
    server = scene.server
    with server.http() as http:
        for params, named in [
            ({}, "starting_at"),
            ({"starting_at": "2025-13-01"}, "starting_at"),
            ({"starting_at": "2025-08-08T00:00:00Z"}, "starting_at"),
            ({"starting_at": "20250808"}, "starting_at"),
            ({"starting_at": scene.today, "limit": 0}, "limit"),
            ({"starting_at": scene.today, "limit": 1001}, "limit"),
            ({"starting_at": scene.today, "limit": "ten"}, "limit"),
            ({"starting_at": scene.today, "page": "not-a-cursor"}, "page"),
        ]:
            assert_error(http.get(REPORT, params=params), 400, "invalid_request_error", named)
        other_day = report(server, starting_at=scene.today, limit=1)["next_page"]
        assert_error(
            http.get(REPORT, params={"starting_at": scene.yesterday, "page": other_day}), 400, "invalid_request_error",
            "page",
        )  # fmt: skip
    api_key = scene.keys["ci-bot"]["key"]
    with server.http(api_key) as http:
        assert_error(http.get(REPORT, params={"starting_at": scene.today}), 403, "permission_error", "admin API key")
    assert_error(httpx.get(server.base_url + REPORT, params={"starting_at": scene.today}, verify=TLS), 401,
                 "authentication_error", "credentials")  # fmt: skip


# --------------------------------------------------------------------------------------------------
# the receiver


def test_the_receiver_refuses_what_it_cannot_take_in_the_anthropic_envelope(scene: Scene) -> None:
    server, key = scene.server, scene.keys["ci-bot"]["key"]
    empty = ExportMetricsServiceRequest().SerializeToString()
    protobuf = "application/x-protobuf"
    assert_error(httpx.post(server.base_url + "/v1/metrics", content=empty, headers={"content-type": protobuf},
                            verify=TLS), 401, "authentication_error", "missing credentials")  # fmt: skip
    assert_error(post(server, "sk-ant-api03-" + "x" * 93 + "AA", empty, protobuf), 401, "authentication_error",
                 "invalid x-api-key")  # fmt: skip
    assert_error(post(server, server.admin_key, empty, protobuf), 403, "permission_error", "use an API key")
    assert_error(post(server, key, b"\xff\xff\xff", protobuf), 400, "invalid_request_error",
                 "ExportMetricsServiceRequest")  # fmt: skip
    assert_error(post(server, key, b"{not json", "application/json"), 400, "invalid_request_error", "not valid JSON")
    assert_error(post(server, key, b'{"resourceMetrics": 3}', "application/json"), 400, "invalid_request_error",
                 "OTLP/JSON")  # fmt: skip
    assert_error(post(server, key, b"\x1f\x8bnope", protobuf, **{"content-encoding": "gzip"}), 400,
                 "invalid_request_error", "gzip")  # fmt: skip
    assert_error(post(server, key, empty, "text/plain"), 415, "invalid_request_error", "Content-Type")
    assert_error(post(server, key, empty, protobuf, **{"content-encoding": "br"}), 415, "invalid_request_error",
                 "Content-Encoding")  # fmt: skip
    assert_error(post(server, key, b"\x00" * (MAX_BODY + 1), protobuf), 413, "request_too_large", str(MAX_BODY))
    bomb = gzip.compress(b"\x00" * (MAX_BODY * 4))
    assert_error(post(server, key, bomb, protobuf, **{"content-encoding": "gzip"}), 413, "request_too_large",
                 "decompressed")  # fmt: skip
    response = httpx.get(server.base_url + "/v1/metrics", headers={"x-api-key": key}, verify=TLS)
    assert_error(response, 405, "invalid_request_error", "POST")
    assert response.headers["allow"] == "POST"
    # nothing refused was counted
    assert report(server, starting_at=scene.today)["data"] == expected_today(scene)


def test_counters_that_cannot_be_counted_are_reported_back_as_partial_success(scene: Scene) -> None:
    gauge = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "claude_code.session.count", "gauge": {"dataPoints": [{"asInt": "7", "timeUnixNano": "1"}]}},
        {"name": "claude_code.commit.count", "sum": {"dataPoints": [{"asInt": "7"}], "isMonotonic": True}},
        {"name": "claude_code.cost.usage", "sum": {"aggregationTemporality": 1, "dataPoints": [
            {"asDouble": 1e300, "timeUnixNano": "5"}, {"asDouble": 1, "timeUnixNano": "18446744073709551615"}]}},
        {"name": "something.else", "gauge": {"dataPoints": [{"asDouble": 1.5}]}},
    ]}]}]}  # fmt: skip
    response = post(scene.server, scene.keys["ci-bot"]["key"], json.dumps(gauge).encode(), "application/json")
    assert response.status_code == 200, response.text
    partial = response.json()["partialSuccess"]
    assert partial["rejectedDataPoints"] == "4"
    assert "not a sum" in partial["errorMessage"]
    assert "temporality is unspecified" in partial["errorMessage"]
    assert "out of range" in partial["errorMessage"]
    # the same in protobuf
    request = json_format.ParseDict(gauge, ExportMetricsServiceRequest())
    response = post(scene.server, scene.keys["ci-bot"]["key"], request.SerializeToString(), "application/x-protobuf")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    assert ExportMetricsServiceResponse.FromString(response.content).partial_success.rejected_data_points == 4
    assert report(scene.server, starting_at="1970-01-01")["data"] == []


def test_logs_are_accepted_in_both_encodings_and_change_no_figure(scene: Scene) -> None:
    server, key = scene.server, scene.keys["claude-code-alice"]["key"]
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    span = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=False,
                       trace_flags=TraceFlags(1))  # fmt: skip
    provider.get_logger("com.anthropic.claude_code").emit(
        body="claude_code.api_request", event_name="claude_code.api_request",
        attributes={"event.name": "api_request", "user.email": ALICE, "model": SONNET, "cost_usd": 0.5,
                    "input_tokens": 100, "output_tokens": 10},
        context=set_span_in_context(NonRecordingSpan(span)),
    )  # fmt: skip
    records = memory.get_finished_logs()
    exporter = OTLPLogExporter(endpoint=server.base_url + "/v1/logs", headers={"x-api-key": key})
    assert exporter.export(records) == LogRecordExportResult.SUCCESS

    tree = json_format.MessageToDict(encode_logs(records))
    log_record = tree["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    for name in ("traceId", "spanId"):  # OTLP/JSON writes these as hex, not base64
        log_record[name] = base64.b64decode(log_record[name]).hex()
    assert log_record["traceId"] == "0af7651916cd43dd8448eb211c80319c"
    response = post(server, key, json.dumps(tree).encode(), "application/json", path="/v1/logs")
    assert response.status_code == 200, response.text
    assert response.json() == {}
    assert_error(post(server, key, b"\x08", "application/x-protobuf", path="/v1/logs"), 400, "invalid_request_error",
                 "ExportLogsServiceRequest")  # fmt: skip
    assert report(server, starting_at=scene.today)["data"] == expected_today(scene)


def test_a_revoked_key_is_refused_within_a_second(scene: Scene) -> None:
    server = scene.server
    created = create_key(server, "revoked-soon")
    empty = ExportMetricsServiceRequest().SerializeToString()
    assert post(server, created["key"], empty, "application/x-protobuf").status_code == 200  # cached as valid
    with server.http() as http:
        response = http.post(f"/v1/organizations/api_keys/{created['id']}", json={"status": "inactive"})
        assert response.status_code == 200, response.text
    revoked_at = time.monotonic()
    while True:
        response = post(server, created["key"], empty, "application/x-protobuf")
        if response.status_code == 401:
            break
        assert response.status_code == 200
        assert time.monotonic() - revoked_at < 1.0, "the revoked key was still accepted after a second"
        time.sleep(0.05)
    assert_error(response, 401, "authentication_error", "inactive")


def test_an_export_the_database_cannot_store_gets_503_so_the_exporter_retries_it() -> None:
    """A real storage failure (the table gone from under the server) answers 503, which OTLP
    exporters retry with backoff; once the database is back the same export is counted."""
    import asyncpg

    export_body = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [
        {"name": "claude_code.commit.count", "sum": {"aggregationTemporality": 1, "isMonotonic": True,
         "dataPoints": [{"asInt": "3", "startTimeUnixNano": str(time.time_ns() - 10**9),
                         "timeUnixNano": str(time.time_ns()),
                         "attributes": [{"key": "user.email", "value": {"stringValue": "dana@acme.test"}}]}]}},
    ]}]}]}  # fmt: skip

    async def sql(dsn: str, statement: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with dedicated_server("postgres", {}) as server:
        key = create_key(server, "claude-code-dana")["key"]
        dsn = server.db.env["ORGWARDEN_DATABASE_URL"]
        asyncio.run(sql(dsn, "ALTER TABLE claude_code_daily RENAME TO claude_code_daily_away"))
        response = post(server, key, json.dumps(export_body).encode(), "application/json")
        assert_error(response, 503, "api_error", "cannot store telemetry right now")
        asyncio.run(sql(dsn, "ALTER TABLE claude_code_daily_away RENAME TO claude_code_daily"))
        response = post(server, key, json.dumps(export_body).encode(), "application/json")
        assert response.status_code == 200, response.text
        (row,) = report(server, starting_at=datetime.now(UTC).date().isoformat())["data"]
        assert row["core_metrics"]["commits_by_claude_code"] == 3
