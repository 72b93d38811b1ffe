"""Prometheus metrics at ``GET /metrics`` (issue 15, point 7), scraped from real servers.

Requests of every plane go to a real ``orgwarden serve``; the scrape is parsed with
prometheus-client's own parser and every count must match the requests made: by plane, route
(data-plane endpoint names, Admin API route templates, never raw ids), method and status; the
latency and upstream histograms; the limit refusals by kind; the state read at scrape time. With
two workers (multiprocess mode), every scrape shows the sum over both, whichever answers it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orgwarden.observability.metrics import SYNC_INTERVAL
from tests.conftest import (
    TLS,
    Database,
    SdkHttpClient,
    Server,
    cli,
    dedicated_server,
    free_port,
    redis_settings,
    unique,
)
from tests.gateway.test_rate_limits import entry_id, new_key, new_workspace, set_key_limits

MODEL = "claude-sonnet-4-6"
MESSAGES: list[Any] = [{"role": "user", "content": "Hello"}]
WORKSPACE_ROUTE = "/v1/organizations/workspaces/{workspace_id}"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server) -> Samples:
    response = httpx.get(server.base_url + "/metrics", verify=TLS)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples: Samples, plane: str, route: str, method: str, status: int) -> float:
    labels = {"plane": plane, "route": route, "method": method, "status": str(status)}
    count = value(samples, "orgwarden_http_requests_total", **labels)
    assert value(samples, "orgwarden_http_request_duration_seconds_count", **labels) == count
    return count


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with dedicated_server("sqlite", {}) as srv:
        yield srv


def test_request_counts_and_histograms_match_the_requests_made(server: Server) -> None:
    key = new_key(server, new_workspace(server))
    client = anthropic.Anthropic(
        api_key=key.secret, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient()
    )
    for _ in range(3):
        client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
    client.messages.count_tokens(model=MODEL, messages=MESSAGES)
    client.models.list()
    client.models.retrieve(MODEL)
    for _ in range(2):
        refused = httpx.post(
            server.base_url + "/v1/messages", json={}, headers={"x-api-key": "sk-ant-api03-no"}, verify=TLS
        )
        assert refused.status_code == 401
    with server.http() as admin:
        for _ in range(2):
            assert admin.get(f"/v1/organizations/workspaces/{key.workspace_id}").status_code == 200
        assert admin.get("/v1/organizations/workspaces/wrkspc_missing").status_code == 404
        assert admin.get("/no-such-thing").status_code == 404
        assert admin.get("/v1/no-such-thing").status_code == 404  # a /v1 path is the gateway's: refused there
    otlp = httpx.post(
        server.base_url + "/v1/metrics", content=b"{}", headers={"x-api-key": "sk-ant-api03-no"}, verify=TLS
    )
    assert otlp.status_code == 401

    samples = scrape(server)
    assert requests(samples, "data", "messages", "POST", 200) == 3
    assert requests(samples, "data", "count_tokens", "POST", 200) == 1
    assert requests(samples, "data", "models", "GET", 200) == 1
    assert requests(samples, "data", "model", "GET", 200) == 1
    assert requests(samples, "data", "messages", "POST", 401) == 2
    assert requests(samples, "admin", WORKSPACE_ROUTE, "GET", 200) == 2
    assert requests(samples, "admin", WORKSPACE_ROUTE, "GET", 404) == 1
    assert requests(samples, "admin", "unmatched", "GET", 404) == 1
    assert requests(samples, "data", "none", "GET", 404) == 1
    assert requests(samples, "telemetry", "/v1/metrics", "POST", 401) == 1
    assert value(samples, "orgwarden_upstream_response_seconds_count", route="messages") == 3
    assert value(samples, "orgwarden_upstream_response_seconds_count", route="count_tokens") == 1
    # Bounded labels: the route is a template, never a raw path with an id in it.
    routes = {dict(labels).get("route", "") for _, labels in samples}
    assert not [route for route in routes if "wrkspc_" in route or "no-such-thing" in route]
    # Read from component state at scrape time.
    assert ("orgwarden_recorder_queue_depth", frozenset()) in samples
    assert value(samples, "orgwarden_limits_unchecked_total") == 0


def test_rate_limit_refusals_are_counted_by_kind(server: Server) -> None:
    key = new_key(server, new_workspace(server))
    set_key_limits(server, key.id, entry_id(server, model=MODEL), {"requests_per_minute": 1})
    before = scrape(server)
    client = anthropic.Anthropic(
        api_key=key.secret, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient()
    )
    statuses: list[int] = []
    deadline = time.monotonic() + 10
    while statuses.count(429) < 2 and time.monotonic() < deadline:  # (the limit is in force within a poll)
        try:
            client.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
            statuses.append(200)
        except anthropic.RateLimitError:
            statuses.append(429)
    assert statuses.count(429) == 2
    after = scrape(server)
    refusals = "orgwarden_limit_refusals_total"
    assert value(after, refusals, kind="rate") - value(before, refusals, kind="rate") == 2
    assert value(after, refusals, kind="spend") == value(before, refusals, kind="spend")
    assert requests(after, "data", "messages", "POST", 429) - requests(before, "data", "messages", "POST", 429) == 2


def test_metrics_enabled_false_serves_no_metrics_while_the_access_log_still_writes() -> None:
    with dedicated_server("sqlite", {"ORGWARDEN_METRICS_ENABLED": "false"}) as server:
        refused = httpx.post(
            server.base_url + "/v1/messages", json={}, headers={"x-api-key": "sk-ant-api03-x"}, verify=TLS
        )
        assert refused.status_code == 401
        response = httpx.get(server.base_url + "/metrics", verify=TLS)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
        deadline = time.monotonic() + 5
        while refused.headers["request-id"] not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"orgwarden.access: {refused.headers['request-id']}" in server.log()


def test_with_two_workers_every_scrape_shows_the_sum_over_both() -> None:
    settings = {**redis_settings(), "ORGWARDEN_WORKERS": "2"}
    with dedicated_server("sqlite", settings) as server:
        with server.http() as admin:
            created = admin.post("/v1/organizations/api_keys", json={"name": unique("mp"), "workspace_id": None})
        secret = created.json()["key"]
        body = {"model": MODEL, "max_tokens": 8, "messages": MESSAGES}
        # Each worker writes its request tallies to its file every second (SYNC_INTERVAL): send
        # requests (a new connection each, which the kernel gives to either worker) until both files
        # show data-plane requests; then every scrape, whichever worker answers it, shows the sum.
        files = Path(server.db.env["ORGWARDEN_DATA_DIR"]) / "prometheus" / server.base_url.rsplit(":", 1)[1]

        def answered_by() -> int:
            workers = 0
            for path in files.glob("requests-*.json"):
                with contextlib.suppress(OSError, ValueError):
                    workers += any(row[0] == "data" for row in json.loads(path.read_text())["requests"])
            return workers

        sent = 0
        deadline = time.monotonic() + 30
        while (sent < 20 or answered_by() < 2) and time.monotonic() < deadline:
            response = httpx.post(
                server.base_url + "/v1/messages", json=body, headers={"x-api-key": secret}, verify=TLS
            )
            assert response.status_code == 200, response.text
            sent += 1
            if sent >= 20:
                time.sleep(0.1)
        assert answered_by() == 2, "one worker answered every request"
        time.sleep(2 * SYNC_INTERVAL + 0.5)  # each worker has written its tallies since its last request
        for _ in range(6):  # whichever worker answers the scrape
            samples = scrape(server)
            assert requests(samples, "data", "messages", "POST", 200) == sent
        # Gauges read from each worker's state are there too (summed over the live workers).
        assert ("orgwarden_recorder_queue_depth", frozenset()) in samples


def test_serve_with_workers_stops_at_once_when_the_metrics_directory_cannot_be_made(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    db = Database("sqlite", {
        "ORGWARDEN_UPSTREAM": "simulator",
        "ORGWARDEN_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "ORGWARDEN_DATA_DIR": str(not_a_directory),
        "ORGWARDEN_SECRET_KEY": "k" * 40,
        "ORGWARDEN_WORKERS": "2",
        "ORGWARDEN_REDIS_URL": "redis://127.0.0.1:6379/0",
    })  # fmt: skip
    result = cli(db, "serve", "--port", str(free_port()), check=False, timeout=30)
    assert result.returncode == 2, result.stderr
    assert "cannot prepare the metrics directory" in result.stderr
    assert "ORGWARDEN_METRICS_ENABLED=false" in result.stderr
