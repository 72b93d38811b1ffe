"""Limits are exact: across two server processes sharing PostgreSQL and Redis, and in one process.

- With a limit of N requests, exactly N of 3N concurrent requests pass, whichever instance answers.
- With a spend limit of X, the metered total never exceeds X, not even by one request, however many
  requests race for the last cents; and it comes within one request's worst case of X (the limit is
  used, not just respected).
- Spend already metered survives a restart: it is rebuilt from the usage records.
- When Redis cannot be reached, each kind of limit does what its setting says (503, or pass
  unchecked and log), and limits work again as soon as Redis is back. These tests run a private
  ``redis-server`` so that they can stop it.

Costs here are computed independently from the public prices of claude-haiku-4-5 ($1 input, $5
output per million tokens: 1e6 and 5e6 picodollars a token).
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from orgwarden.storage.tables import UsageRecord
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import (
    REQUIRE_REDIS,
    TLS,
    Server,
    another_instance,
    drop_database,
    free_port,
    make_database,
    query_db,
    redis_settings,
    start_server,
    stop_server,
    unique,
)

MODEL = "claude-haiku-4-5"
PICO_PER_CENT = 10**10
OUTPUT_PRICE = 5 * 10**6  # picodollars per output token


# -- helpers ---------------------------------------------------------------------------------------


def create_key(server: Server) -> str:
    return str(create_key_with_id(server)["key"])


def create_key_with_id(server: Server) -> dict[str, Any]:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("exact")})
    assert response.status_code == 200, response.text
    return dict(response.json())


def set_org_rate_limit(server: Server, limiter: str, value: int | None) -> None:
    with server.http() as http:
        entry = http.get("/v1/organizations/rate_limits", params={"model": MODEL}).json()["data"][0]
        response = http.post(
            f"/v1/organizations/rate_limits/{entry['id']}", json={"limits": [{"type": limiter, "value": value}]}
        )
    assert response.status_code == 200, response.text


def set_spend_limit(server: Server, cents: int, scope: dict[str, str] | None = None) -> dict[str, Any]:
    body = {"amount": str(cents), "period": "daily", "scope": scope or {"type": "organization"}}
    with server.http() as http:
        response = http.post("/v1/organizations/spend_limits", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def message(base_url: str, key: str, *, max_tokens: int = 16, output_tokens: int | None = None) -> httpx.Response:
    """One request on a fresh connection (so that the instances' workers all take part)."""
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    if output_tokens is not None:
        headers["anthropic-simulator-output-tokens"] = str(output_tokens)
    body = {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(timeout=30, verify=TLS) as client:
        return client.post(f"{base_url}/v1/messages", json=body, headers=headers)


def fire(targets: list[tuple[str, str]], **kwargs: Any) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
        return list(pool.map(lambda t: message(t[0], t[1], **kwargs), targets))


def metered_cost(server: Server, *, expect_rows: int) -> int:
    """The sum of metered costs, once every expected record has been written (batched writes)."""

    async def read(uow: UnitOfWork) -> tuple[int, int]:
        session = uow._session
        assert session is not None
        stmt = select(func.count(), func.coalesce(func.sum(UsageRecord.cost_picodollars), 0))
        count, total = (await session.execute(stmt)).one()
        return int(count), int(total)

    deadline = time.monotonic() + 10
    while True:
        count, total = query_db(server.db, read)
        if count >= expect_rows or time.monotonic() > deadline:
            assert count == expect_rows, f"{count} usage records, expected {expect_rows}"
            return total
        time.sleep(0.1)


@contextmanager
def deployment(tmp: Path, mode: str, extra_env: dict[str, str] | None = None) -> Iterator[list[Server]]:
    """``redis``: two instances on PostgreSQL sharing the real Redis; ``memory``: one process, SQLite."""
    if mode == "redis":
        db = make_database("postgres", tmp)
        db.env.update(redis_settings())
    else:
        db = make_database("sqlite", tmp)
    db.env.update(extra_env or {})
    servers = [start_server(db, tmp)]
    try:
        if mode == "redis":
            servers.append(another_instance(servers[0], tmp))
        yield servers
    finally:
        for server in servers:
            stop_server(server)
        drop_database(db)


# -- exactness ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["redis", "memory"])
def test_with_a_limit_of_n_requests_exactly_n_of_3n_concurrent_requests_pass(tmp_path: Path, mode: str) -> None:
    """RPM 10 with a whole minute's burst: a bucket of 10 that refills one request every 6 s. 30
    requests at once, split over both instances, each on its own connection: exactly 10 pass."""
    n = 10
    with deployment(tmp_path, mode, {"ORGWARDEN_RATE_LIMIT_REQUEST_BURST_SECONDS": "60"}) as servers:
        key = create_key(servers[0])
        set_org_rate_limit(servers[0], "requests_per_minute", n)
        time.sleep(1.0)  # every instance reloads within a second
        started = time.monotonic()
        targets = [(servers[i % len(servers)].base_url, key) for i in range(3 * n)]
        responses = fire(targets)
        elapsed = time.monotonic() - started
        assert elapsed < 5, "the burst took so long that the bucket refilled; the count would not be exact"
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == n, statuses
        assert statuses.count(429) == 2 * n, statuses
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert "10 requests per minute" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        if mode == "redis":  # both instances answered and refused: the count is shared, not per process
            by_instance = {s.base_url: [r.status_code for (u, _), r in zip(targets, responses, strict=True)
                                        if u == s.base_url] for s in servers}  # fmt: skip
            assert all(200 in codes or 429 in codes for codes in by_instance.values())
        assert metered_cost(servers[0], expect_rows=n) > 0  # refused requests never reached the upstream


@pytest.mark.parametrize("mode", ["redis", "memory"])
def test_a_spend_limit_is_never_exceeded_by_racing_requests(tmp_path: Path, mode: str) -> None:
    """Each request produces 2000 output tokens (1 cent) and may cost at most about 1.4 cents (its
    body as input tokens plus 4096, and max_tokens of output). 90 requests race for a 10-cent daily
    limit from both instances: the metered total stays within 10 cents, and at most one worst case
    below it."""
    limit_cents = 10
    with deployment(tmp_path, mode) as servers:
        key = create_key(servers[0])
        set_spend_limit(servers[0], limit_cents)
        time.sleep(1.0)
        targets = [(servers[i % len(servers)].base_url, key) for i in range(90)]
        responses = fire(targets, max_tokens=2000, output_tokens=2000)
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert refused, "the limit never bit"
        for response in refused:
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["message"].startswith("You have reached your specified API usage limits.")
            assert "You will regain access on" in error["message"]
            assert error["message"].endswith(" at 00:00 UTC.")
        total = metered_cost(servers[0], expect_rows=len(ok))
        assert total <= limit_cents * PICO_PER_CENT, f"metered {total} pico > limit {limit_cents} cents"
        one_worst_case = 2000 * OUTPUT_PRICE + 10_000 * 10**6  # generous bound of one request's worst case
        assert total > limit_cents * PICO_PER_CENT - one_worst_case, f"only {total} pico metered: limit unused"
        assert len(ok) * 2000 * OUTPUT_PRICE <= total  # each answered request cost at least its output


def test_spend_already_metered_survives_a_restart(tmp_path: Path) -> None:
    """Two requests of about 1 cent each against a 3-cent limit: a third one (worst case about
    1.4 cents) does not fit. After a restart the spend is rebuilt from the records: still refused."""
    db = make_database("sqlite", tmp_path)
    server = start_server(db, tmp_path)
    try:
        key = create_key(server)
        set_spend_limit(server, 3)
        time.sleep(1.0)
        first = [message(server.base_url, key, max_tokens=2000, output_tokens=2000) for _ in range(2)]
        assert [r.status_code for r in first] == [200, 200]
        assert message(server.base_url, key, max_tokens=2000, output_tokens=2000).status_code == 400
        metered_cost(server, expect_rows=2)
    finally:
        stop_server(server)
    restarted = another_instance(server, tmp_path)
    try:
        again = message(restarted.base_url, key, max_tokens=2000, output_tokens=2000)
        assert again.status_code == 400, again.text
        assert again.json()["error"]["message"].startswith("You have reached your specified API usage limits.")
        small = message(restarted.base_url, key, max_tokens=1, output_tokens=1)  # a small one still fits
        assert small.status_code == 200, small.text
    finally:
        stop_server(restarted)
        drop_database(db)


def test_a_workspace_spend_limit_names_the_workspace(tmp_path: Path) -> None:
    db = make_database("sqlite", tmp_path)
    server = start_server(db, tmp_path)
    try:
        with server.http() as http:
            workspace = http.post("/v1/organizations/workspaces", json={"name": unique("ws")}).json()
            secret = http.post(
                "/v1/organizations/api_keys", json={"name": unique("k"), "workspace_id": workspace["id"]}
            ).json()["key"]
        set_spend_limit(server, 1, {"type": "workspace", "workspace_id": workspace["id"]})
        time.sleep(1.0)
        refused = message(server.base_url, secret, max_tokens=2000)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["message"].startswith(
            "You have reached your specified workspace API usage limits."
        )
        other = message(server.base_url, create_key(server), max_tokens=2000)  # the default workspace
        assert other.status_code == 200, other.text
        # A model without a price cannot be bounded: refused while a spend limit applies, forwarded otherwise.
        body = {"model": "claude-unpriced-9", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(timeout=30, verify=TLS) as client:
            limited = client.post(f"{server.base_url}/v1/messages", json=body, headers={"x-api-key": secret})
            free = client.post(f"{server.base_url}/v1/messages", json=body, headers={"x-api-key": create_key(server)})
        assert limited.status_code == 400, limited.text
        assert "has no price" in limited.json()["error"]["message"]
        assert free.status_code == 404, free.text  # forwarded: the simulator does not know the model either
    finally:
        stop_server(server)
        drop_database(db)


# -- Redis unreachable --------------------------------------------------------------------------------


@contextmanager
def private_redis() -> Iterator[tuple[int, Any]]:
    """A ``redis-server`` of this test's own, on a free port; yields (port, restart function)."""
    binary = shutil.which("redis-server")
    if binary is None:
        if REQUIRE_REDIS:
            pytest.fail("redis-server is not installed (ORGWARDEN_TEST_REQUIRE_REDIS=1)")
        pytest.skip("redis-server is not installed")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    state: dict[str, subprocess.Popen[bytes]] = {}

    def start() -> None:
        state["process"] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the private redis-server did not start")

    def stop() -> None:
        state["process"].terminate()
        state["process"].wait(timeout=10)

    start()
    try:
        yield port, (start, stop)
    finally:
        if state["process"].poll() is None:
            stop()


@pytest.mark.parametrize(("rate_mode", "spend_mode"), [("fail_open", "fail_closed"), ("fail_closed", "fail_open")])
def test_when_redis_is_unreachable_each_kind_of_limit_does_what_its_setting_says(
    tmp_path: Path, rate_mode: str, spend_mode: str
) -> None:
    with private_redis() as (port, (start, stop)):
        db = make_database("sqlite", tmp_path)
        db.env.update(
            {
                "ORGWARDEN_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "ORGWARDEN_RATE_LIMITS_ON_STORE_FAILURE": rate_mode,
                "ORGWARDEN_SPEND_LIMITS_ON_STORE_FAILURE": spend_mode,
            }
        )
        server = start_server(db, tmp_path)
        try:
            rate, spend = create_key_with_id(server), create_key_with_id(server)
            rate_key, rate_id, spend_key, spend_id = rate["key"], rate["id"], spend["key"], spend["id"]
            with server.http() as http:  # a rate limit on one key, a spend limit on the other
                entry = http.get("/v1/organizations/rate_limits", params={"model": MODEL}).json()["data"][0]
                response = http.post(
                    f"/v1/organizations/api_keys/{rate_id}/rate_limits/{entry['id']}",
                    json={"limits": [{"type": "requests_per_minute", "value": 6000}]},
                )
                assert response.status_code == 200, response.text
            set_spend_limit(server, 100, {"type": "api_key", "api_key_id": spend_id})
            time.sleep(1.0)
            assert message(server.base_url, rate_key).status_code == 200
            assert message(server.base_url, spend_key).status_code == 200

            stop()
            rate_answer = message(server.base_url, rate_key)
            spend_answer = message(server.base_url, spend_key)
            for answer, mode in ((rate_answer, rate_mode), (spend_answer, spend_mode)):
                if mode == "fail_open":
                    assert answer.status_code == 200, answer.text
                else:
                    assert answer.status_code == 503, answer.text
                    assert answer.json()["error"]["type"] == "api_error"
                    assert "limits store" in answer.json()["error"]["message"]
            assert "limits store is unreachable" in server.log()
            health = httpx.get(f"{server.base_url}/health", verify=TLS).json()["limits"]
            assert health == {"store": "redis", "unchecked_requests": 1}  # the one fail_open request

            start()  # back: limits are checked again, without a restart of orgwarden
            deadline = time.monotonic() + 10
            while message(server.base_url, spend_key).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert message(server.base_url, rate_key).status_code == 200
            assert message(server.base_url, spend_key).status_code == 200
        finally:
            stop_server(server)
            drop_database(db)


# -- alerts, end to end ---------------------------------------------------------------------------------


def test_spend_alerts_fire_once_each_through_the_gateway_with_signed_webhooks(tmp_path: Path) -> None:
    """A 4-cent daily limit with thresholds 25/50/100 %: requests of 1 cent each cross 25 % and 50 %
    (an audit event and a verified webhook each, once); the spend never reaches 100 % (the last cent
    cannot be reserved: the worst case does not fit), so 100 % fires at the wall, with the first
    refusal, once."""
    from standardwebhooks import Webhook

    from orgwarden.storage.tables import AuditEvent
    from tests.gateway.webhook_receiver import running_receiver

    secret = "whsec_" + base64.b64encode(b"orgwarden-test-webhook-secret-32b").decode()
    with running_receiver() as receiver:
        db = make_database("sqlite", tmp_path)
        db.env.update({"ORGWARDEN_WEBHOOK_URL": receiver.url, "ORGWARDEN_WEBHOOK_SECRET": secret})
        server = start_server(db, tmp_path)
        try:
            key = create_key(server)
            with server.http() as http:
                created = http.post(
                    "/v1/organizations/spend_limits",
                    json={"amount": "4", "period": "daily", "scope": {"type": "organization"},
                          "alert_thresholds": [25, 50, 100]},
                )  # fmt: skip
            assert created.status_code == 200, created.text
            time.sleep(1.0)
            statuses = [message(server.base_url, key, max_tokens=2000, output_tokens=2000).status_code
                        for _ in range(4)]  # fmt: skip
            assert statuses[:2] == [200, 200], statuses
            assert 400 in statuses, statuses
            deliveries = receiver.wait_for(3)
            time.sleep(0.5)  # nothing more arrives
            assert len(receiver.snapshot()) == 3
            payloads = []
            for delivery in deliveries:
                payload = Webhook(secret).verify(delivery.body, delivery.headers)
                assert payload["type"] == "spend_limit.threshold_reached"
                payloads.append(payload["data"])
            assert sorted(p["threshold_percent"] for p in payloads) == [25, 50, 100]
            at_the_wall = next(p for p in payloads if p["threshold_percent"] == 100)
            assert Decimal(at_the_wall["spent_cents"]) < 4
            assert {p["spend_limit_id"] for p in payloads} == {created.json()["id"]}

            async def alerts(uow: UnitOfWork) -> list[AuditEvent]:
                session = uow._session
                assert session is not None
                stmt = select(AuditEvent).where(AuditEvent.action == "spend_limit.alert")
                return list((await session.execute(stmt)).scalars().all())

            events = query_db(db, alerts)
            assert sorted(e.details["threshold_percent"] for e in events) == [25, 50, 100]
            assert all(e.target_id == created.json()["id"] and e.actor_type == "system" for e in events)
            assert "spend alert" in server.log()
        finally:
            stop_server(server)
            drop_database(db)
