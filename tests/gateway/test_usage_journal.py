"""The recorder that nothing can wedge or make forget (issue 15, point 2), with real servers.

* client-derived strings are bounded before they reach a row, so a 300-character model or a forged
  ``X-Forwarded-For`` no longer makes PostgreSQL refuse the batch (and, before, every batch after it);
* a row the database refuses for good is dropped loudly and the others are written;
* the journal: a SIGKILL under load loses no answered request's record, SIGTERM while PostgreSQL is
  down ends within its bound and leaves the rest in the journal, and replay is idempotent (records
  and rollups counted once, the audit chain intact).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from orgwarden import ids
from orgwarden.config import load_settings
from orgwarden.domain.pricing import Cost
from orgwarden.domain.rollups import Entry
from orgwarden.gateway.journal import encode, journal_dir
from orgwarden.gateway.recorder import Recorder
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.tables import UsageRollup
from orgwarden.storage.uow import UnitOfWork, UnitOfWorkFactory
from tests.conftest import (
    TLS,
    Database,
    Server,
    cli,
    drop_database,
    make_database,
    query_db,
    spawn_serve,
    start_server,
    stop_server,
    unique,
)
from tests.throwaway import ThrowawayPostgres

MODEL = "claude-sonnet-4-6"
REQUEST: dict[str, Any] = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}


def create_key(server: Server) -> dict[str, Any]:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("journal")})
    assert response.status_code == 200, response.text
    return dict(response.json())


def usage_ids(db: Database, organization_id: str) -> set[str]:
    async def read(uow: UnitOfWork) -> set[str]:
        return {row.id for row in await uow.usage.for_organization(organization_id)}

    return query_db(db, read)


def audit_events(db: Database, organization_id: str) -> list[Any]:
    async def read(uow: UnitOfWork) -> list[Any]:
        return await uow.audit.all(organization_id)

    return query_db(db, read)


def rollup_requests(db: Database, organization_id: str) -> int:
    async def read(uow: UnitOfWork) -> int:
        stmt = select(func.coalesce(func.sum(UsageRollup.requests), 0)).where(
            UsageRollup.organization_id == organization_id, UsageRollup.bucket_width == "1d"
        )
        return int((await uow.usage.session.execute(stmt)).scalar_one())

    return query_db(db, read)


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} after {timeout} s"
        time.sleep(0.2)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Database]:
    db = make_database("postgres", tmp_path)
    db.env["ORGWARDEN_DATA_DIR"] = str(tmp_path / "data")  # the journal's home, this test's own
    yield db
    drop_database(db)


# --------------------------------------------------------------------------------------------------
# bounded strings, isolated refusals


def test_an_overlong_model_and_a_forged_forwarded_address_no_longer_stop_recording(
    postgres: Database, tmp_path: Path
) -> None:
    server = start_server(postgres, tmp_path)
    try:
        key = create_key(server)
        long_model = "claude-" + "x" * 293
        with server.http(key["key"]) as http:
            # An upstream failure (5xx) is recorded with the request's model; a 4xx without usage
            # (such a model's 404) would leave no record at all.
            long = http.post(
                "/v1/messages", json={**REQUEST, "model": long_model}, headers={"anthropic-simulator-fault": "500"}
            )
        assert long.status_code == 500, long.text
        keyless = httpx.post(
            f"{server.base_url}/v1/messages",
            headers={"anthropic-allowed-org-ids": "not a uuid,,", "x-forwarded-for": "9" * 100},
            json=REQUEST,
            verify=TLS,
        )
        assert keyless.status_code == 400, keyless.text
        with server.http(key["key"]) as http:
            after = [http.post("/v1/messages", json=REQUEST) for _ in range(3)]
        assert [r.status_code for r in after] == [200, 200, 200]
        wanted = {long.headers["request-id"], *(r.headers["request-id"] for r in after)}
        organization = server.organization["id"]
        wait_until(lambda: wanted <= usage_ids(postgres, organization), 10, "records missing")

        async def read(uow: UnitOfWork) -> Any:
            wanted_id = long.headers["request-id"]
            return next(r for r in await uow.usage.for_organization(organization) if r.id == wanted_id)

        record = query_db(postgres, read)
        assert record.model == long_model[:127] + "…"
        rid = keyless.headers["request-id"]
        wait_until(lambda: any(e.request_id == rid for e in audit_events(postgres, organization)), 10, "no event")
        event = next(e for e in audit_events(postgres, organization) if e.request_id == rid)
        assert event.source_ip == "127.0.0.1"  # a forwarded entry that is not an address is never taken
        assert "dropped" not in server.log()
    finally:
        stop_server(server)


def test_a_row_the_database_refuses_is_dropped_loudly_and_the_others_are_written(
    postgres: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    init = json.loads(cli(postgres, "init", "--json", "--org-name", "Acme", "--admin-email", "r@acme.test").stdout)
    organization = init["organization"]["id"]

    def event(organization_id: str) -> dict[str, Any]:
        return dict(
            id=ids.new_id(ids.AUDIT_EVENT), organization_id=organization_id, occurred_at=datetime.now(UTC),
            actor_type="anonymous", actor_id="unauthenticated", actor_user_id=None,
            action="tenant_restriction.check", target_type="organization", target_id=organization_id,
            workspace_id=None, request_id=ids.new_request_id(), source_ip="127.0.0.1", outcome="invalid_request",
            details={"n": 1},
        )  # fmt: skip

    good = [event(organization), event(organization)]
    poison = event(str(uuid.uuid4()))  # no such organization: a foreign key the database enforces

    async def run() -> int:
        engine = create_engine(load_settings(**postgres.settings_kwargs))
        try:
            recorder = Recorder(UnitOfWorkFactory(session_factory(engine)))
            await recorder.start()
            for row in (good[0], poison, good[1]):
                await recorder.put("audit", row)
            await recorder.stop(30)
            return recorder.dropped
        finally:
            await engine.dispose()

    with caplog.at_level("ERROR", logger="orgwarden.gateway"):
        dropped = asyncio.run(run())
    assert dropped == 1
    assert any(poison["id"] in message and "dropped" in message for message in caplog.messages)
    stored = {e.id for e in audit_events(postgres, organization)}
    assert {good[0]["id"], good[1]["id"]} <= stored
    assert cli(postgres, "audit", "verify").returncode == 0


# --------------------------------------------------------------------------------------------------
# replay


def test_a_journal_left_behind_is_replayed_once_and_keeps_the_audit_chain_valid(
    postgres: Database, tmp_path: Path
) -> None:
    server = start_server(postgres, tmp_path)
    organization = server.organization["id"]
    try:
        key = create_key(server)
        with server.http(key["key"]) as http:
            answered = [http.post("/v1/messages", json=REQUEST).headers["request-id"] for _ in range(3)]
        httpx.post(
            f"{server.base_url}/v1/messages", headers={"anthropic-allowed-org-ids": "bad"}, json=REQUEST, verify=TLS
        )
        wait_until(lambda: set(answered) <= usage_ids(postgres, organization), 10, "records missing")
        wait_until(lambda: len(audit_events(postgres, organization)) >= 1, 10, "no audit event")
    finally:
        stop_server(server)
    committed_events = audit_events(postgres, organization)
    before = usage_ids(postgres, organization)
    assert rollup_requests(postgres, organization) == len(before)

    async def rows(uow: UnitOfWork) -> list[dict[str, Any]]:
        found = []
        for record in await uow.usage.for_organization(organization):
            found.append({c: getattr(record, c) for c in record.__table__.columns.keys()})  # noqa: SIM118
        return found

    committed = query_db(postgres, rows)
    fresh = []
    for _ in range(2):
        row = {**committed[0], "id": ids.new_request_id(), "created_at": datetime.now(UTC)}
        fresh.append(row)
    columns = ("id", "organization_id", "occurred_at", "actor_type", "actor_id", "actor_user_id", "action",
               "target_type", "target_id", "workspace_id", "request_id", "source_ip", "outcome", "details")  # fmt: skip
    old_event = {name: getattr(committed_events[0], name) for name in columns}
    new_events = [
        {**old_event, "id": ids.new_id(ids.AUDIT_EVENT), "occurred_at": datetime.now(UTC),
         "request_id": ids.new_request_id(), "source_ip": "10.0.0.1", "details": {"replayed": n}}
        for n in range(2)
    ]  # fmt: skip
    lines = []
    for row in [*committed[:2], *fresh]:  # two already written, two not
        cost = Cost(row["cost_picodollars"], 0, 0, 0, 0, 0)
        lines.append(encode("usage", row, Entry(row, cost, row["inference_geo"])))
    lines += [encode("audit", old_event, None), *(encode("audit", e, None) for e in new_events)]
    settings = load_settings(**postgres.settings_kwargs)
    directory = journal_dir(settings.data_dir, settings.sqlalchemy_url)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "999999-1-000000.journal").write_bytes(b"".join(lines) + b'{"k":"usage","r":{"id":')  # cut line

    again = spawn_serve(postgres.env, tmp_path)
    try:
        expected = before | {row["id"] for row in fresh}
        wait_until(lambda: usage_ids(postgres, organization) == expected, 10, "replayed records missing")
        wait_until(lambda: len(audit_events(postgres, organization)) == len(committed_events) + 2, 10, "events")
        time.sleep(0.5)  # more than two flush intervals: a duplicate would show now
        assert usage_ids(postgres, organization) == expected
        assert rollup_requests(postgres, organization) == len(expected)  # each record counted once
        assert not list(directory.glob("999999-*"))
        assert "line 8 cannot be read" in again.log()  # the line a crash cut is skipped, the rest replayed
        assert "replaying 7 records" in again.log()
    finally:
        stop_server(again)
    verify = cli(postgres, "audit", "verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


# --------------------------------------------------------------------------------------------------
# SIGKILL and SIGTERM


def _load(server: Server, api_key: str, outcomes: list[tuple[int, str]], stop: threading.Event) -> None:
    with server.http(api_key) as http:
        while not stop.is_set():
            try:
                response = http.post("/v1/messages", json=REQUEST)
            except httpx.HTTPError:
                return
            outcomes.append((response.status_code, response.headers.get("request-id", "")))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_sigkill_under_load_loses_no_answered_requests_record(tmp_path: Path, backend: str) -> None:
    db = make_database(backend, tmp_path)
    db.env["ORGWARDEN_DATA_DIR"] = str(tmp_path / "data")
    db.env["ORGWARDEN_SIMULATOR_LATENCY_MS"] = "20"
    server = start_server(db, tmp_path)
    organization = server.organization["id"]
    try:
        key = create_key(server)
        outcomes: list[tuple[int, str]] = []
        stop = threading.Event()
        threads = [threading.Thread(target=_load, args=(server, key["key"], outcomes, stop)) for _ in range(8)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(outcomes) >= 300, 60, "the load did not get going")
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        answered = {rid for status, rid in outcomes if status == 200}
        assert len(answered) == len(outcomes)
        unwritten = answered - usage_ids(db, organization)
        again = spawn_serve(db.env, tmp_path)
        try:
            wait_until(lambda: answered <= usage_ids(db, organization), 15, "records lost to SIGKILL")
            print(f"\nSIGKILL ({backend}): {len(answered)} answered, {len(unwritten)} written only after replay")
        finally:
            stop_server(again)
    finally:
        if server.process.poll() is None:
            server.process.kill()
        drop_database(db)


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_a_sigterm_while_postgres_is_down_ends_in_time_and_loses_nothing(tmp_path: Path, outage: str) -> None:
    pg = ThrowawayPostgres()
    try:
        pg.start()
        pg.create_database("orgwarden")
        env = pg.outage_env("orgwarden", tmp_path / "data")
        db = Database("postgres", env)
        server = start_server(db, tmp_path)
        organization = server.organization["id"]
        key = create_key(server)
        with server.http(key["key"]) as http:
            answered = [http.post("/v1/messages", json=REQUEST).headers["request-id"]]  # the key is cached now
            pg.stop() if outage == "stopped" else pg.freeze()
            for _ in range(50):
                response = http.post("/v1/messages", json=REQUEST)
                assert response.status_code == 200, response.text
                answered.append(response.headers["request-id"])
        refused = httpx.post(
            f"{server.base_url}/v1/messages", headers={"anthropic-allowed-org-ids": "x"}, json=REQUEST, verify=TLS
        )
        assert refused.status_code == 400
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=30)  # the bound: 6 s, and slack for a loaded machine
        except subprocess.TimeoutExpired:
            server.process.kill()
            raise AssertionError(f"still running 30 s after SIGTERM:\n{server.log()}") from None
        took = time.monotonic() - started
        assert code in (0, -signal.SIGTERM), server.log()
        assert "left in the journal; they are written at the next start" in server.log()
        assert "Traceback" not in server.log()
        pg.start() if outage == "stopped" else pg.thaw()
        again = spawn_serve(env, tmp_path)
        try:
            wait_until(lambda: set(answered) <= usage_ids(db, organization), 15, "records lost in the outage")
            refused_id = refused.headers["request-id"]
            events = lambda: {e.request_id for e in audit_events(db, organization)}  # noqa: E731
            wait_until(lambda: refused_id in events(), 10, "the audit event was lost")
        finally:
            stop_server(again)
        verify = cli(db, "audit", "verify", check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        print(f"\nSIGTERM with PostgreSQL {outage}: exited after {took:.1f} s; {len(answered)} answered, all recorded")
        assert not [p for p in (tmp_path / "data").rglob("*.journal") if p.stat().st_size]
    finally:
        pg.close()
    assert os.path.exists(tmp_path)
