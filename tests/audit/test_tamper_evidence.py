"""Tamper evidence, on SQLite and PostgreSQL: migration 0007 seals the events written before it, the
database refuses UPDATE and DELETE on ``audit_events``, and when someone goes round that (drops or
disables the triggers, as a DBA can) ``orgwarden audit verify`` exits 1 naming the event.

One database per backend walks through it all in order: events written at revision 0006 for two
organizations; upgrade; events written through a service and through ``insert_many`` (the gateway
recorder's path); then each kind of tampering, undone before the next one (an UPDATE back, or the
deleted row inserted again: inserting is what append-only allows).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from orgwarden import ids
from orgwarden.config import Settings, load_settings
from orgwarden.crypto import SecretBox, resolve_secret
from orgwarden.domain.audit_chain import GENESIS, event_hash
from orgwarden.domain.policy import Actor
from orgwarden.services.audit_log import Verification
from orgwarden.services.container import Services
from orgwarden.services.context import Context
from orgwarden.storage import migrate
from orgwarden.storage.engine import create_engine, session_factory
from orgwarden.storage.tables import AuditEvent
from orgwarden.storage.uow import UnitOfWorkFactory
from tests.conftest import Database, cli

T = TypeVar("T")
ORG_A = "11111111-1111-4111-8111-111111111111"
ORG_B = "22222222-2222-4222-8222-222222222222"
EVENTS = AuditEvent.__table__


# --------------------------------------------------------------------------------------------------
# the database, as the application and as a DBA


def with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    async def run() -> T:
        engine = create_engine(settings)
        try:
            uow = UnitOfWorkFactory(session_factory(engine))
            return await work(Services.build(uow, settings, SecretBox(resolve_secret(settings))))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def with_connection(settings: Settings, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """One transaction on a plain connection (no unit of work: this is the DBA's seat)."""

    async def run() -> T:
        engine = create_async_engine(settings.sqlalchemy_url)
        try:
            async with engine.begin() as connection:
                return await work(connection)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def verify(settings: Settings, organization_id: str = ORG_A) -> Verification:
    return with_services(settings, lambda services: services.audit_log.verify(organization_id))


def chain(settings: Settings) -> list[dict[str, Any]]:
    async def read(connection: AsyncConnection) -> list[dict[str, Any]]:
        stmt = sa.select(EVENTS).where(EVENTS.c.organization_id == ORG_A).order_by(EVENTS.c.seq)
        return [dict(row) for row in (await connection.execute(stmt)).mappings()]

    return with_connection(settings, read)


def as_dba(settings: Settings, statement: sa.Executable) -> None:
    """Run ``statement`` with the append-only triggers out of the way, and put them back."""

    async def run(connection: AsyncConnection) -> None:
        if connection.dialect.name == "postgresql":
            await connection.execute(sa.text("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only"))
            await connection.execute(statement)
            await connection.execute(sa.text("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"))
            return
        query = sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'")
        triggers = (await connection.execute(query)).all()
        assert len(triggers) == 2, triggers
        for name, _ in triggers:
            await connection.execute(sa.text(f"DROP TRIGGER {name}"))
        await connection.execute(statement)
        for _, sql in triggers:
            await connection.execute(sa.text(sql))

    with_connection(settings, run)


def refused(settings: Settings, statement: str) -> str:
    """The database's refusal of ``statement``, which must fail."""

    async def run(connection: AsyncConnection) -> None:
        await connection.execute(sa.text(statement))

    try:
        with_connection(settings, run)
    except Exception as exc:  # the driver's own error type differs per backend
        return str(exc)
    raise AssertionError(f"the database accepted: {statement}")


# --------------------------------------------------------------------------------------------------
# the scenario


def legacy_events(settings: Settings) -> list[str]:
    """Two organizations and their events, written at revision 0006 (no seq, no hashes)."""
    now = datetime(2026, 1, 5, 12, 0, 0)
    organizations = sa.table(
        "organizations", *(sa.column(n) for n in ("id", "name")), sa.column("created_at", sa.DateTime())
    )
    columns = [c.name for c in EVENTS.columns if c.name not in ("seq", "prev_hash", "hash")]
    legacy = sa.table("audit_events", *(sa.column(n, EVENTS.c[n].type) for n in columns))
    rows = []
    for n, organization_id in enumerate([ORG_A, ORG_B, ORG_A, ORG_B, ORG_A]):
        rows.append({
            "id": ids.new_id(ids.AUDIT_EVENT), "organization_id": organization_id,
            "occurred_at": (now + timedelta(seconds=n)).replace(tzinfo=UTC), "actor_type": "system",
            "actor_id": "legacy", "actor_user_id": None, "action": f"legacy.{n}", "target_type": "organization",
            "target_id": organization_id, "workspace_id": None, "request_id": None, "source_ip": None,
            "outcome": "success", "details": {"n": n, "text": "é ✓"},
        })  # fmt: skip

    async def insert(connection: AsyncConnection) -> None:
        await connection.execute(organizations.insert(), [
            {"id": ORG_A, "name": "A", "created_at": now}, {"id": ORG_B, "name": "B", "created_at": now + timedelta(1)},
        ])  # fmt: skip
        await connection.execute(legacy.insert(), rows)

    with_connection(settings, insert)
    return [row["id"] for row in rows if row["organization_id"] == ORG_A]


def new_events(settings: Settings) -> None:
    """Two events through a use case, two as the gateway's recorder writes them."""
    ctx = Context(Actor("cli", "cli:tamper-test", ORG_A, None), None, "cli")

    async def work(services: Services) -> None:
        await services.workspaces.create(ctx, name="first")
        await services.workspaces.create(ctx, name="second")

    with_services(settings, work)

    async def recorder() -> None:
        engine = create_engine(settings)
        try:
            async with UnitOfWorkFactory(session_factory(engine))() as uow:
                await uow.audit.insert_many([
                    {"id": ids.new_id(ids.AUDIT_EVENT), "organization_id": ORG_A, "occurred_at": datetime.now(UTC),
                     "actor_type": "anonymous", "actor_id": "unauthenticated", "actor_user_id": None,
                     "action": "tenant_restriction.check", "target_type": "organization", "target_id": ORG_A,
                     "workspace_id": None, "request_id": ids.new_request_id(), "source_ip": "127.0.0.1",
                     "outcome": "invalid_request", "details": {"n": n, "allowed_org_ids": None}}
                    for n in range(2)
                ])  # fmt: skip
                await uow.commit()
        finally:
            await engine.dispose()

    asyncio.run(recorder())


def test_tampering_with_a_stored_event_makes_audit_verify_name_it(database: Database) -> None:
    settings = load_settings(**database.settings_kwargs)
    migrate.upgrade(settings, "0006")
    legacy = legacy_events(settings)
    migrate.upgrade(settings)

    # sealed by the migration, per organization, in id order; then chained on by every writer
    new_events(settings)
    events = chain(settings)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["id"] for e in events[:3]] == legacy
    assert events[0]["prev_hash"] == GENESIS
    assert all(e["hash"] == event_hash(e) for e in events)
    assert [e["action"] for e in events[3:]] == ["workspace.create"] * 2 + ["tenant_restriction.check"] * 2
    intact = verify(settings)
    assert (intact.intact, intact.events, intact.head.seq, intact.head.hash) == (True, 7, 7, events[-1]["hash"])
    other = verify(settings, ORG_B)
    assert (other.intact, other.events) == (True, 2)

    # the database refuses changes and deletions, whoever asks
    for statement in (
        f"UPDATE audit_events SET outcome = 'failure' WHERE id = '{events[3]['id']}'",
        f"DELETE FROM audit_events WHERE id = '{events[3]['id']}'",
        "DELETE FROM audit_events",
        *(["TRUNCATE audit_events"] if database.backend == "postgres" else []),
    ):
        assert "audit_events is append-only" in refused(settings, statement), statement
    assert chain(settings) == events

    # an altered event: verify exits 1 naming it
    target = events[3]
    as_dba(settings, EVENTS.update().where(EVENTS.c.id == target["id"]).values(outcome="failure"))
    result = cli(database, "audit", "verify", check=False)
    assert result.returncode == 1, result.stdout
    assert f"event {target['id']} (seq 4)" in result.stderr
    assert "hash mismatch" in result.stderr
    as_dba(settings, EVENTS.update().where(EVENTS.c.id == target["id"]).values(outcome="success"))
    assert verify(settings).intact

    # a deleted event: verify names the gap, and the event after it
    gone, after = events[4], events[5]
    as_dba(settings, EVENTS.delete().where(EVENTS.c.id == gone["id"]))
    result = cli(database, "audit", "verify", check=False)
    assert result.returncode == 1, result.stdout
    assert f"event {after['id']} (seq 6)" in result.stderr
    assert "seq 5 missing before this event: an event was deleted" in result.stderr
    with_connection(settings, lambda connection: connection.execute(EVENTS.insert(), [gone]))
    assert verify(settings).intact

    # the newest event deleted: no link shows it, the chain head does
    last = events[-1]
    as_dba(settings, EVENTS.delete().where(EVENTS.c.id == last["id"]))
    broken = verify(settings).broken
    assert broken is not None
    assert (broken.event_id, broken.seq, broken.problem) == (None, 7, "seq_gap")
    with_connection(settings, lambda connection: connection.execute(EVENTS.insert(), [last]))

    # an event altered and re-hashed: the next one's prev_hash no longer matches
    forged = {**events[2], "details": {"n": 4, "text": "forged"}}
    forged["hash"] = event_hash(forged)
    as_dba(
        settings,
        EVENTS.update().where(EVENTS.c.id == forged["id"]).values(details=forged["details"], hash=forged["hash"]),
    )
    broken = verify(settings).broken
    assert broken is not None
    assert (broken.event_id, broken.seq, broken.problem) == (events[3]["id"], 4, "prev_hash_mismatch")
    assert f"seq 3 ({forged['id']})" in broken.message
