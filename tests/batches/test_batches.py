"""Message Batches through orgwarden, driven by the official SDK, with ``orgwarden simulator`` as the
upstream on its own port (so a test can ask it what reached it).

Covers: create -> ended -> results with ``results_url`` on orgwarden; metering once per batch at
batch prices (results read twice, the background poll, two instances reading at once on
PostgreSQL); spend and rate limits refusing before the upstream, and no overshoot by concurrent
batches; workspace scoping, residency, unknown batches and the body size limit.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from orgwarden.gateway.batches import usage_id
from orgwarden.storage.tables import UsageRecord
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import (
    ORGWARDEN,
    TLS,
    SdkHttpClient,
    Server,
    another_instance,
    assert_error,
    drop_database,
    free_port,
    make_database,
    query_db,
    start_server,
    stop_server,
    unique,
)

MODEL = "claude-sonnet-4-6"
FAST = {"anthropic-simulator-batch-seconds": "0.3"}  # the simulator ends these batches at once
POLL_SECONDS = "1"


@contextlib.contextmanager
def simulator_process() -> Iterator[str]:
    """``orgwarden simulator`` on a free port; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORGWARDEN_")}
    process = subprocess.Popen(
        [ORGWARDEN, "simulator", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{url}/v1/models", timeout=1, verify=TLS)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "orgwarden simulator did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.kill()
        process.wait()


def upstream_env(url: str) -> dict[str, str]:
    return {
        "ORGWARDEN_UPSTREAM": url,
        "ORGWARDEN_UPSTREAM_API_KEY": "sk-test",
        "ORGWARDEN_BATCH_POLL_INTERVAL_SECONDS": POLL_SECONDS,
        "ORGWARDEN_BATCH_MAX_BODY_BYTES": "65536",
    }


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[Server, str]]:
    """One orgwarden (PostgreSQL, so that a second instance can join it) in front of one stand-alone
    simulator, for the whole module."""
    with simulator_process() as url, tempfile.TemporaryDirectory(prefix="orgwarden-test-") as tmp:
        db = make_database("postgres", Path(tmp))
        db.env.update(upstream_env(url))
        srv = start_server(db, Path(tmp))
        try:
            yield srv, url
        finally:
            stop_server(srv)
            drop_database(db)


# -- helpers -----------------------------------------------------------------------------------------


def workspace_key(server: Server, **workspace: Any) -> tuple[str, str, str]:
    """A new workspace and a key of it: (workspace id, key id, key secret)."""
    created = server.client().organization.workspaces.create(name=unique("batches"), **workspace)
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("key"), "workspace_id": created.id})
    assert response.status_code == 200, response.text
    return created.id, response.json()["id"], response.json()["key"]


def sdk(server: Server, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient())


def requests_of(count: int, max_tokens: int = 64, **params: Any) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": MODEL,
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": f"Question {i}?"}],
                **params,
            },
        }
        for i in range(count)
    ]


def wait_ended(client: anthropic.Anthropic, batch_id: str) -> Any:
    deadline = time.monotonic() + 15
    while (batch := client.messages.batches.retrieve(batch_id)).processing_status != "ended":
        assert time.monotonic() < deadline, f"batch {batch_id} did not end: {batch}"
        time.sleep(0.2)
    return batch


def records(server: Server, key_id: str) -> list[UsageRecord]:
    async def read(uow: UnitOfWork) -> list[UsageRecord]:
        return [r for r in await uow.usage.for_organization(server.organization["id"]) if r.api_key_id == key_id]

    return query_db(server.db, read)


def wait_records(server: Server, key_id: str, expected: int) -> list[UsageRecord]:
    """The key's records once ``expected`` are there, then (two poll intervals and flushes later) again."""
    deadline = time.monotonic() + 15
    while len(records(server, key_id)) < expected:
        assert time.monotonic() < deadline, f"{len(records(server, key_id))} of {expected} records"
        time.sleep(0.2)
    time.sleep(2 * float(POLL_SECONDS) + 0.5)  # a second metering would show by now
    found = records(server, key_id)
    assert len(found) == expected, [(r.id, r.endpoint) for r in found]
    return found


def upstream_batches(url: str) -> set[str]:
    """Every batch the simulator holds."""
    response = httpx.get(
        f"{url}/v1/messages/batches", params={"limit": 1000}, headers={"x-api-key": "sk-test"}, verify=TLS
    )
    assert response.status_code == 200, response.text
    return {batch["id"] for batch in response.json()["data"]}


def batch_pico(usage: Any) -> int:
    """Sonnet 4.6 at batch prices (half of 3 / 15 USD per million tokens), in picodollars."""
    total = (Decimal(usage.input_tokens) * Decimal("1.5") + Decimal(usage.output_tokens) * Decimal("7.5")) * 10**6
    return int(total)


def set_spend_limit(server: Server, workspace_id: str, cents: int) -> None:
    body = {"amount": str(cents), "period": "daily", "scope": {"type": "workspace", "workspace_id": workspace_id}}
    with server.http() as http:
        response = http.post("/v1/organizations/spend_limits", json=body)
    assert response.status_code == 200, response.text


# -- the life of a batch ---------------------------------------------------------------------------


def test_a_batch_ends_and_its_results_come_through_orgwarden_metered_once_at_batch_prices(
    world: tuple[Server, str],
) -> None:
    server, upstream = world
    workspace_id, key_id, key = workspace_key(server)
    client = sdk(server, key)
    bad = {"custom_id": "unknown-model", "params": {"model": "claude-nope", "max_tokens": 8,
                                                   "messages": [{"role": "user", "content": "hi"}]}}  # fmt: skip
    created = client.messages.batches.create(requests=[*requests_of(2), bad], extra_headers=FAST)  # type: ignore[list-item]
    assert created.id in upstream_batches(upstream)
    assert created.processing_status == "in_progress"
    ended = wait_ended(client, created.id)
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (2, 1)
    assert ended.results_url == f"{server.base_url}/v1/messages/batches/{created.id}/results"
    first = {r.custom_id: r for r in client.messages.batches.results(created.id)}
    second = {r.custom_id: r for r in client.messages.batches.results(created.id)}  # read twice
    assert {k: r.result.type for k, r in first.items()} == {"r0": "succeeded", "r1": "succeeded",
                                                             "unknown-model": "errored"}  # fmt: skip
    assert second.keys() == first.keys()
    found = {r.id: r for r in wait_records(server, key_id, 2)}  # and the poll came by: still two
    for custom_id in ("r0", "r1"):
        result = first[custom_id].result
        assert result.type == "succeeded"
        record = found[usage_id(created.id, custom_id)]
        usage = result.message.usage
        assert (record.service_tier, record.endpoint, record.workspace_id) == ("batch", "batch", workspace_id)
        assert (record.input_tokens, record.output_tokens) == (usage.input_tokens, usage.output_tokens)
        assert record.cost_picodollars == batch_pico(usage)
    # the usage and cost reports show it under service tier "batch"
    today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    with server.http() as http:
        report = http.get(
            "/v1/organizations/usage_report/messages",
            params={"starting_at": today, "group_by[]": ["service_tier", "api_key_id"], "api_key_ids[]": [key_id]},
        )
    assert report.status_code == 200, report.text
    rows = [row for bucket in report.json()["data"] for row in bucket["results"]]
    assert [(r["service_tier"], r["uncached_input_tokens"]) for r in rows] == [
        ("batch", sum(r.input_tokens for r in found.values()))
    ]
    with server.http() as http:
        costs = http.get(
            "/v1/organizations/cost_report",
            params={"starting_at": today, "group_by[]": ["workspace_id", "description"]},
        )
    assert costs.status_code == 200, costs.text
    mine = [row for bucket in costs.json()["data"] for row in bucket["results"] if row["workspace_id"] == workspace_id]
    assert {row["service_tier"] for row in mine} == {"batch"}
    metered = sum(r.cost_picodollars for r in found.values())
    assert sum(Decimal(row["amount"]) for row in mine) == Decimal(metered) / 10**10  # cents, at batch prices, once


def test_the_background_poll_meters_an_ended_batch_nobody_read_and_reading_it_later_adds_nothing(
    world: tuple[Server, str],
) -> None:
    server, _ = world
    _, key_id, key = workspace_key(server)
    client = sdk(server, key)
    created = client.messages.batches.create(requests=requests_of(3), extra_headers=FAST)  # type: ignore[arg-type]
    wait_records(server, key_id, 3)  # never read: the poll metered it
    assert len(list(client.messages.batches.results(created.id))) == 3
    wait_records(server, key_id, 3)


def test_a_batch_is_visible_only_to_its_workspace(world: tuple[Server, str]) -> None:
    server, _ = world
    _, _, key = workspace_key(server)
    _, _, other = workspace_key(server)
    mine = sdk(server, key).messages.batches.create(requests=requests_of(1), extra_headers=FAST)  # type: ignore[arg-type]
    theirs = sdk(server, other).messages.batches.create(requests=requests_of(1), extra_headers=FAST)  # type: ignore[arg-type]
    with server.http(other) as http:
        for method, path in (
            ("GET", f"/v1/messages/batches/{mine.id}"),
            ("GET", f"/v1/messages/batches/{mine.id}/results"),
            ("POST", f"/v1/messages/batches/{mine.id}/cancel"),
            ("DELETE", f"/v1/messages/batches/{mine.id}"),
            ("GET", "/v1/messages/batches/msgbatch_01unknown"),
        ):
            response = http.request(method, path)
            assert_error(response, 404, "not_found_error", path.split("/")[4])
    listed = [b.id for b in sdk(server, other).messages.batches.list()]
    assert listed == [theirs.id]


def test_cancel_then_delete_a_batch(world: tuple[Server, str]) -> None:
    server, upstream = world
    _, _, key = workspace_key(server)
    client = sdk(server, key)
    created = client.messages.batches.create(
        requests=requests_of(2),  # type: ignore[arg-type]
        extra_headers={"anthropic-simulator-batch-seconds": "600"},
    )
    assert client.messages.batches.cancel(created.id).processing_status == "canceling"
    ended = wait_ended(client, created.id)
    assert ended.request_counts.canceled == 2
    assert [r.result.type for r in client.messages.batches.results(created.id)] == ["canceled", "canceled"]
    assert client.messages.batches.delete(created.id).type == "message_batch_deleted"
    assert created.id not in upstream_batches(upstream)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(created.id)


# -- refusals before the upstream ------------------------------------------------------------------


def test_residency_is_applied_to_every_request_and_a_refusal_names_the_request(world: tuple[Server, str]) -> None:
    server, upstream = world
    residency = {"workspace_geo": "us", "allowed_inference_geos": ["us"], "default_inference_geo": "us"}
    _, _, key = workspace_key(server, data_residency=residency)
    before = upstream_batches(upstream)
    requests = requests_of(2)
    requests[1]["params"]["inference_geo"] = "global"
    with server.http(key) as http:
        refused = http.post("/v1/messages/batches", json={"requests": requests})
        assert_error(refused, 400, "invalid_request_error", "requests[1].params.inference_geo: 'global' is not allowed")
        too_large = http.post("/v1/messages/batches", json={"requests": requests_of(1), "pad": "x" * 70_000})
        assert_error(too_large, 413, "request_too_large", "65536 bytes")
    assert upstream_batches(upstream) == before
    client = sdk(server, key)
    created = client.messages.batches.create(requests=requests_of(1), extra_headers=FAST)  # type: ignore[arg-type]
    wait_ended(client, created.id)
    (result,) = client.messages.batches.results(created.id)
    assert result.result.type == "succeeded"
    assert result.result.message.usage.inference_geo == "us"  # the workspace's default was inserted


def test_a_batch_over_a_spend_limit_is_refused_before_the_upstream_and_two_cannot_overshoot_it(
    world: tuple[Server, str],
) -> None:
    server, upstream = world
    workspace_id, _, key = workspace_key(server)
    # One request's worst case at batch prices: ~20,000 output tokens x 7.5 USD/M = 15 cents (+ input).
    set_spend_limit(server, workspace_id, 25)
    time.sleep(1.5)  # the limit is announced to the gateway within a second
    before = upstream_batches(upstream)
    with server.http(key) as http:
        refused = http.post("/v1/messages/batches", json={"requests": requests_of(2, max_tokens=20_000)})
        assert_error(refused, 400, "invalid_request_error", "workspace API usage limits")
    assert upstream_batches(upstream) == before

    def create() -> int:
        with server.http(key) as http:
            return http.post(
                "/v1/messages/batches", json={"requests": requests_of(1, max_tokens=20_000)}, headers=FAST
            ).status_code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(lambda _: create(), range(2)))
    assert statuses == [200, 400]  # one reservation fits, the second would pass the limit
    (admitted,) = upstream_batches(upstream) - before
    client = sdk(server, key)
    wait_ended(client, admitted)
    list(client.messages.batches.results(admitted))  # metered: the reservation becomes its small cost
    assert create() == 200


def test_a_batch_over_the_batch_rate_limit_is_refused_before_the_upstream(world: tuple[Server, str]) -> None:
    server, upstream = world
    workspace_id, _, key = workspace_key(server)
    with server.http() as http:
        (entry,) = http.get("/v1/organizations/rate_limits", params={"group_type": "batch"}).json()["data"]
        response = http.post(
            f"/v1/organizations/workspaces/{workspace_id}/rate_limits/{entry['id']}",
            json={"limits": [{"type": "requests_per_minute", "value": 1}]},
        )
        assert response.status_code == 200, response.text
    time.sleep(1.5)
    before = upstream_batches(upstream)
    with server.http(key) as http:
        first = http.post("/v1/messages/batches", json={"requests": requests_of(1)}, headers=FAST)
        assert first.status_code == 200, first.text
        second = http.post("/v1/messages/batches", json={"requests": requests_of(1)}, headers=FAST)
        assert_error(second, 429, "rate_limit_error", "Message Batches")
        assert int(second.headers["retry-after"]) >= 1
    assert upstream_batches(upstream) - before == {first.json()["id"]}


# -- two instances -------------------------------------------------------------------


def test_two_instances_reading_the_results_at_once_meter_them_once(world: tuple[Server, str], tmp_path: Path) -> None:
    first, _ = world
    second = another_instance(first, tmp_path)
    try:
        _, key_id, key = workspace_key(first)
        client = sdk(first, key)
        created = client.messages.batches.create(requests=requests_of(20), extra_headers=FAST)  # type: ignore[arg-type]
        wait_ended(client, created.id)
        readers = [sdk(first, key), sdk(second, key)]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            counts = list(pool.map(lambda c: len(list(c.messages.batches.results(created.id))), readers))
        assert counts == [20, 20]
        wait_records(first, key_id, 20)
    finally:
        stop_server(second)
