"""Spend alerts against a real migrated database (SQLite and PostgreSQL) and a real webhook receiver.

Each test runs one or two ``SpendAlerts`` the way a gateway worker does (own engine, own webhook
sender, started and stopped), feeds them counter values and reads back what was written: the
``spend_alerts`` rows, the audit events and the signed deliveries (verified with the Standard
Webhooks library). Rule ids are unique per test, so the tests of a module share one database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from orgwarden import ids
from orgwarden.config import load_settings
from orgwarden.domain.clock import utcnow
from orgwarden.domain.limits import PICODOLLARS_PER_CENT, SpendRule, period_window
from orgwarden.gateway.alerts import OrganizationId, SpendAlerts
from orgwarden.gateway.webhooks import WebhookSender
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.tables import AuditEvent, SpendAlert
from orgwarden.storage.uow import UnitOfWorkFactory
from tests.conftest import BACKENDS, Database, cli, drop_database, make_database
from tests.gateway.webhook_receiver import Receiver, running_receiver, until

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
CENT = PICODOLLARS_PER_CENT
T = TypeVar("T")


def run(body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(body())


@pytest.fixture(scope="module", params=BACKENDS)
def initialized(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Database, str]]:
    """A database migrated and initialized by the real ``orgwarden init``, and its organization id."""
    db = make_database(request.param, tmp_path_factory.mktemp("alerts"))
    init = json.loads(cli(db, "init", "--json", "--org-name", "Acme", "--admin-email", "root@acme.test").stdout)
    yield db, init["organization"]["id"]
    drop_database(db)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def rule(scope_type: str, scope_id: str, *, period: str = "monthly", amount_cents: int = 10_000) -> SpendRule:
    return SpendRule(ids.new_id("splim"), scope_type, scope_id, period, amount_cents, (50, 80, 100))


@asynccontextmanager
async def instance(db: Database, organization_id: OrganizationId, url: str) -> AsyncIterator[SpendAlerts]:
    """One gateway worker's alerting: its own engine and webhook sender, started and stopped in order."""
    engine = create_engine(load_settings(**db.settings_kwargs))
    sender = WebhookSender(url, SECRET, first_backoff_seconds=0.05)
    alerts = SpendAlerts(UnitOfWorkFactory(session_factory(engine)), sender, organization_id)
    await sender.start()
    await alerts.start()
    try:
        yield alerts
    finally:
        await alerts.stop()  # first: its last alerts go to the sender
        await sender.stop()
        await engine.dispose()


async def stored(db: Database, rule_ids: set[str]) -> tuple[list[SpendAlert], list[AuditEvent]]:
    engine = create_engine(load_settings(**db.settings_kwargs))
    try:
        async with UnitOfWorkFactory(session_factory(engine))() as uow:
            session = uow.audit.session
            alerts = (await session.scalars(select(SpendAlert).where(SpendAlert.spend_limit_id.in_(rule_ids)))).all()
            events = (
                await session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.action == "spend_limit.alert", AuditEvent.target_id.in_(rule_ids))
                    .order_by(AuditEvent.id)
                )
            ).all()
        return sorted(alerts, key=lambda a: (a.spend_limit_id, a.period_start, a.threshold)), list(events)
    finally:
        await engine.dispose()


def deliveries(receiver: Receiver, rule_ids: set[str]) -> list[dict[str, Any]]:
    """The verified payloads the receiver got for these rules (raises on a bad signature)."""
    payloads = [dict(Webhook(SECRET).verify(r.body, r.headers)) for r in receiver.answered()]
    return [p for p in payloads if p["data"]["spend_limit_id"] in rule_ids]


def test_each_threshold_fires_once_as_spend_grows(
    initialized: tuple[Database, str], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    db, organization_id = initialized
    workspace_id = ids.new_id(ids.WORKSPACE)
    limit = rule("workspace", workspace_id)
    now = utcnow()
    start, end = period_window("monthly", now)

    async def main() -> None:
        async with instance(db, lambda: organization_id, receiver.url) as alerts:
            alerts.observe(limit, 5_000 * CENT - 1, now)  # a picodollar short of 50 %
            assert alerts.pending == 0
            alerts.observe(limit, 5_000 * CENT, now)  # exactly 50 %
            await until(lambda: (limit.id, start, 50) in alerts.fired and alerts.pending == 0)
            alerts.observe(limit, 5_000 * CENT + 123, now)  # still above 50 % only: nothing to do
            assert alerts.pending == 0
            alerts.observe(limit, 8_000 * CENT + CENT // 2, now)
            await until(lambda: (limit.id, start, 80) in alerts.fired and alerts.pending == 0)
            alerts.observe(limit, 12_345 * CENT + CENT * 6789 // 10_000, now)
            await until(lambda: (limit.id, start, 100) in alerts.fired and alerts.pending == 0)
            for spent in (8_000 * CENT, 20_000 * CENT):  # again, any level: known, no work
                alerts.observe(limit, spent, now)
                assert alerts.pending == 0
            await until(lambda: len(receiver.answered()) == 3)

    run(main)
    rows, events = run(lambda: stored(db, {limit.id}))
    assert [(r.threshold, r.spent_picodollars, r.amount_cents) for r in rows] == [
        (50, 5_000 * CENT, 10_000),
        (80, 8_000 * CENT + CENT // 2, 10_000),
        (100, 12_345 * CENT + CENT * 6789 // 10_000, 10_000),
    ]
    assert {r.period_start for r in rows} == {start}
    assert {r.organization_id for r in rows} == {organization_id}

    expected = [
        {
            "threshold_percent": threshold,
            "amount_cents": 10_000,
            "spent_cents": spent,
            "period": "monthly",
            "period_start": start.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "period_end": end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "scope": {"type": "workspace", "id": workspace_id},
        }
        for threshold, spent in ((50, "5000"), (80, "8000.5"), (100, "12345.678"))
    ]
    assert [e.details for e in events] == expected
    for event in events:
        assert (event.organization_id, event.actor_type, event.actor_id, event.actor_user_id) == (
            organization_id, "system", "orgwarden", None,
        )  # fmt: skip
        assert (event.target_type, event.target_id, event.workspace_id, event.outcome) == (
            "spend_limit", limit.id, workspace_id, "success",
        )  # fmt: skip

    payloads = deliveries(receiver, {limit.id})
    assert [p["type"] for p in payloads] == ["spend_limit.threshold_reached"] * 3
    assert [p["data"] for p in payloads] == [
        {**details, "spend_limit_id": limit.id, "organization_id": organization_id} for details in expected
    ]
    assert f"workspace {workspace_id} reached 80% of its monthly limit ($100.00): $80.00 spent" in caplog.text


def test_concurrent_instances_fire_each_threshold_once_in_total(
    initialized: tuple[Database, str], receiver: Receiver
) -> None:
    db, organization_id = initialized
    limits = [rule("organization", organization_id, period="daily", amount_cents=100) for _ in range(5)]
    limits.append(rule("api_key", ids.new_id(ids.API_KEY), period="weekly", amount_cents=1))
    rule_ids = {limit.id for limit in limits}
    now = utcnow()

    async def main() -> tuple[frozenset[Any], frozenset[Any]]:
        async with (
            instance(db, organization_id, receiver.url) as first,
            instance(db, organization_id, receiver.url) as second,
        ):
            for spent in (60, 90, 150):  # cents: each step crosses thresholds on both at once
                for limit in limits:
                    first.observe(limit, spent * CENT, now)
                    second.observe(limit, spent * CENT, now)
                await asyncio.sleep(0)
            await until(lambda: first.pending == 0 and second.pending == 0)
            await until(lambda: len(deliveries(receiver, rule_ids)) >= 18)
            await asyncio.sleep(0.2)  # no late duplicates
            return first.fired, second.fired

    first_fired, second_fired = run(main)
    rows, events = run(lambda: stored(db, rule_ids))
    keys = {(r.spend_limit_id, r.period_start, r.threshold) for r in rows}
    assert len(rows) == len(keys) == 18
    assert len(events) == 18
    assert sorted((e.target_id, e.details["threshold_percent"]) for e in events) == sorted(
        (limit.id, threshold) for limit in limits for threshold in (50, 80, 100)
    )
    assert len(deliveries(receiver, rule_ids)) == 18
    assert keys <= first_fired  # the instance that lost a race knows the alert fired too
    assert keys <= second_fired
    api_key_events = [e for e in events if e.target_id == limits[-1].id]
    assert {e.workspace_id for e in api_key_events} == {None}


def test_a_new_period_fires_again(initialized: tuple[Database, str], receiver: Receiver) -> None:
    db, organization_id = initialized
    limit = rule("organization", organization_id, period="daily", amount_cents=1_000)
    day_one = datetime(2025, 3, 10, 23, 59, 59, tzinfo=UTC)
    day_two = datetime(2025, 3, 11, 0, 0, 1, tzinfo=UTC)

    async def main() -> None:
        async with instance(db, "ignored-for-organization-scope", receiver.url) as alerts:
            alerts.observe(limit, 2_000 * CENT, day_one)  # everything at once: 50, 80 and 100
            await until(lambda: alerts.pending == 0)
            alerts.observe(limit, 2_000 * CENT, day_one)
            assert alerts.pending == 0
            alerts.observe(limit, 600 * CENT, day_two)  # a fresh counter in a new day
            await until(lambda: alerts.pending == 0)
            await until(lambda: len(deliveries(receiver, {limit.id})) == 4)

    run(main)
    rows, events = run(lambda: stored(db, {limit.id}))
    assert [(r.period_start, r.threshold) for r in rows] == [
        (datetime(2025, 3, 10, tzinfo=UTC), 50),
        (datetime(2025, 3, 10, tzinfo=UTC), 80),
        (datetime(2025, 3, 10, tzinfo=UTC), 100),
        (datetime(2025, 3, 11, tzinfo=UTC), 50),
    ]
    assert [e.details["period_start"] for e in events] == ["2025-03-10T00:00:00.000000Z"] * 3 + [
        "2025-03-11T00:00:00.000000Z"
    ]
    assert {e.organization_id for e in events} == {organization_id}
    assert {e.workspace_id for e in events} == {None}
    assert [p["data"]["period_end"] for p in deliveries(receiver, {limit.id})][-1] == "2025-03-12T00:00:00.000000Z"


def test_stop_drains_and_a_restart_knows_what_fired(initialized: tuple[Database, str], receiver: Receiver) -> None:
    db, organization_id = initialized
    limit = rule("organization", organization_id)
    now = utcnow()
    start, _ = period_window("monthly", now)

    async def main() -> None:
        async with instance(db, organization_id, receiver.url) as alerts:
            alerts.observe(limit, 5_000 * CENT, now)  # stopped right away: stop() records it
        # ...and the sender's stop delivered it: it has arrived; the receiver's thread marks it answered
        # just after writing the answer, which the sender may read first
        assert [r for r in receiver.snapshot() if limit.id in r.body.decode()]
        await until(lambda: len(deliveries(receiver, {limit.id})) == 1)
        async with instance(db, organization_id, receiver.url) as restarted:
            assert (limit.id, start, 50) in restarted.fired
            restarted.observe(limit, 7_000 * CENT, now)
            assert restarted.pending == 0
            restarted.observe(limit, 8_000 * CENT, now)
            assert restarted.pending == 1
            await until(lambda: restarted.pending == 0)

    run(main)
    rows, _ = run(lambda: stored(db, {limit.id}))
    assert [r.threshold for r in rows] == [50, 80]
    assert [p["data"]["threshold_percent"] for p in deliveries(receiver, {limit.id})] == [50, 80]


def test_a_database_error_is_logged_on_one_line_and_retried(
    initialized: tuple[Database, str], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    db, organization_id = initialized
    limit = rule("workspace", ids.new_id(ids.WORKSPACE))
    now = utcnow()
    current = {"id": "no-such-organization"}  # the audit event's foreign key fails until it is fixed

    async def main() -> None:
        async with instance(db, lambda: current["id"], receiver.url) as alerts:
            alerts.observe(limit, 10_000 * CENT, now)
            await until(lambda: "cannot record the 50% alert" in caplog.text)
            await asyncio.sleep(0.6)  # a retry or two
            assert alerts.pending == 3
            assert not [key for key in alerts.fired if key[0] == limit.id]
            rows, _ = await stored(db, {limit.id})
            assert rows == []  # the alert row rolled back with the failed audit event
            current["id"] = organization_id
            await until(lambda: alerts.pending == 0)
            alerts.observe(limit, 10_000 * CENT, now)
            assert alerts.pending == 0

    run(main)
    rows, events = run(lambda: stored(db, {limit.id}))
    assert [r.threshold for r in rows] == [50, 80, 100]
    assert len(events) == 3
    assert len(deliveries(receiver, {limit.id})) == 3
    failures = [r for r in caplog.records if "cannot record" in r.getMessage()]
    assert failures
    for record in failures:
        assert record.levelno == logging.ERROR
        assert record.exc_info is None
        assert "\n" not in record.getMessage()
        assert "retrying in" in record.getMessage()
