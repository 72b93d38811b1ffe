"""Honest answers when a dependency fails (issue 15, point 4), against a throwaway PostgreSQL and
Redis that the tests stop and freeze (``tests.throwaway``), never the shared ones.

* PostgreSQL stopped: the Admin API answers 503 ``api_error`` "storage unavailable", never 500; a key
  the gateway has seen is still served, a never-seen key gets 503 (not 401, not 500); ``/health``
  says ``degraded`` naming the database (200) and ``/ready`` 503; all back to normal once it is up.
* PostgreSQL frozen (SIGSTOP): the Admin API answers 503 within its time-outs instead of hanging.
* Redis frozen: data-plane requests are answered (rate limits fail open) instead of hanging.
* The SQLite database file is created 0600.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import (
    TLS,
    Database,
    SdkHttpClient,
    Server,
    assert_error,
    make_database,
    start_server,
    stop_server,
    unique,
)
from tests.throwaway import ThrowawayPostgres, ThrowawayRedis

REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Hi"}],
}
BOUND = 20.0  # seconds: the client's own time-out, far above the server's (1 s connect, 2 s statement)


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[ThrowawayPostgres, Server]]:
    pg = ThrowawayPostgres()
    server: Server | None = None
    try:
        pg.start()
        pg.create_database("orgwarden")
        env = pg.outage_env("orgwarden", tmp_path / "data")
        server = start_server(Database("postgres", env), tmp_path)
        yield pg, server
    finally:
        if server is not None:
            stop_server(server)
        pg.close()


def new_key(server: Server) -> str:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("outage")})
    assert response.status_code == 200, response.text
    return str(response.json()["key"])


def message(server: Server, key: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/messages", headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        json=REQUEST, timeout=BOUND, verify=TLS,
    )  # fmt: skip


def admin_get(server: Server) -> httpx.Response:
    with server.http() as http:
        return http.get("/v1/organizations/me", timeout=BOUND)


def wait_ready(server: Server, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while httpx.get(f"{server.base_url}/ready", timeout=BOUND, verify=TLS).status_code != 200:
        assert time.monotonic() < deadline, "not ready again after the database came back"
        time.sleep(0.3)


def test_with_postgres_stopped_the_apis_answer_503_and_cached_keys_are_still_served(
    outage: tuple[ThrowawayPostgres, Server],
) -> None:
    pg, server = outage
    seen, unseen = new_key(server), new_key(server)
    assert message(server, seen).status_code == 200  # cached from now on

    pg.stop()
    time.sleep(1.1)  # older than the health check's cache

    assert_error(admin_get(server), 503, "api_error", "storage unavailable")
    sdk = anthropic.Anthropic(
        api_key=server.admin_key, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient()
    )
    with pytest.raises(anthropic.InternalServerError) as raised:
        sdk.organization.retrieve()
    assert raised.value.status_code == 503
    assert message(server, seen).status_code == 200
    refused = message(server, unseen)
    assert_error(refused, 503, "api_error", "storage unavailable")
    assert refused.headers["retry-after"]
    # Files and batches look their records up in the database on every request: 503, never 500.
    headers = {"x-api-key": seen, "anthropic-version": "2023-06-01"}
    for path in ("/v1/files/file_011CNha8iCJcU1wXNR6q4V8w", "/v1/messages/batches/msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"):
        looked_up = httpx.get(f"{server.base_url}{path}", headers=headers, timeout=BOUND, verify=TLS)
        assert_error(looked_up, 503, "api_error", "storage unavailable")
    health = httpx.get(f"{server.base_url}/health", timeout=BOUND, verify=TLS)
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["dependencies"] == {"database": "down"}
    ready = httpx.get(f"{server.base_url}/ready", timeout=BOUND, verify=TLS)
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "down": ["database"]}

    pg.start()
    wait_ready(server)
    assert httpx.get(f"{server.base_url}/health", verify=TLS).json()["status"] == "ok"
    assert admin_get(server).status_code == 200
    assert message(server, unseen).status_code == 200


def test_with_postgres_frozen_the_admin_api_answers_503_instead_of_hanging(
    outage: tuple[ThrowawayPostgres, Server],
) -> None:
    pg, server = outage
    assert admin_get(server).status_code == 200
    pg.freeze()
    try:
        assert_error(admin_get(server), 503, "api_error", "storage unavailable")  # httpx gives up after BOUND
        assert httpx.get(f"{server.base_url}/ready", timeout=BOUND, verify=TLS).status_code == 503
    finally:
        pg.thaw()
    wait_ready(server)
    assert admin_get(server).status_code == 200


def test_with_redis_frozen_data_plane_requests_are_answered(tmp_path: Path) -> None:
    redis = ThrowawayRedis()
    try:
        db = make_database("sqlite", tmp_path)
        db.env.update({"ORGWARDEN_REDIS_URL": redis.url, "ORGWARDEN_REDIS_TIMEOUT_SECONDS": "0.5"})
        server = start_server(db, tmp_path)
        try:
            key = new_key(server)
            assert message(server, key).status_code == 200
            redis.freeze()
            answered = message(server, key)  # rate limits fail open by default: passed, counted
            assert answered.status_code == 200, answered.text
            time.sleep(1.1)  # older than the health check's cache
            ready = httpx.get(f"{server.base_url}/ready", timeout=BOUND, verify=TLS)
            assert ready.status_code == 503
            assert ready.json()["down"] == ["redis"]
            redis.thaw()
        finally:
            stop_server(server)
    finally:
        redis.close()


def test_the_sqlite_database_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    db = make_database("sqlite", tmp_path)
    server = start_server(db, tmp_path)
    stop_server(server)
    path = Path(db.env["ORGWARDEN_DATA_DIR"]) / "orgwarden.sqlite3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
