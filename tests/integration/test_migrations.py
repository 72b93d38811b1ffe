"""Alembic migrations on SQLite and PostgreSQL: up to head, down to base, up again, one step at a time,
and the models (``storage.tables``) agree with what the migrations build."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import DateTime, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.types import TypeDecorator

from orgwarden.config import Settings, load_settings
from orgwarden.storage import migrate
from orgwarden.storage.tables import Base
from tests.conftest import Database, cli

APP_TABLES = frozenset(Base.metadata.tables)


def settings_of(db: Database) -> Settings:
    return load_settings(**db.settings_kwargs)


def on_connection(db: Database, work: Any) -> Any:
    """Run ``work(sync_connection)`` against the database, over the async driver orgwarden uses."""

    async def run() -> Any:
        engine = create_async_engine(settings_of(db).sqlalchemy_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def table_names(db: Database) -> set[str]:
    return set(on_connection(db, lambda connection: inspect(connection).get_table_names()))


def revisions_in_order() -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config(Settings()))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def test_the_models_declare_the_tables_the_application_needs() -> None:
    assert {
        "organizations",
        "users",
        "invites",
        "workspaces",
        "workspace_members",
        "api_keys",
        "admin_api_keys",
        "audit_events",
    } <= APP_TABLES


def test_upgrade_to_head_creates_every_table(database: Database) -> None:
    head = migrate.head_revision()
    assert cli(database, "db", "current").stdout.strip() == "base"
    result = cli(database, "db", "upgrade")
    assert f"database at revision {head}" in result.stdout
    assert table_names(database) == APP_TABLES | {"alembic_version"}
    assert cli(database, "db", "current").stdout.strip() == head
    assert migrate.current_revision(settings_of(database)) == head
    # upgrading an up-to-date database is a no-op
    assert f"database at revision {head}" in cli(database, "db", "upgrade").stdout


def test_downgrade_to_base_removes_every_table_and_upgrade_works_again(database: Database) -> None:
    first = json.loads(cli(database, "init", "--json").stdout)  # migrates, and leaves rows in the FK chains
    cli(database, "keys", "create", "--name", "k")  # and an API key, in the default workspace

    result = cli(database, "db", "downgrade", "base")
    assert "database at revision base" in result.stdout
    assert table_names(database) & APP_TABLES == set()
    assert cli(database, "db", "current").stdout.strip() == "base"
    assert migrate.current_revision(settings_of(database)) is None

    migrate.upgrade(settings_of(database))
    assert table_names(database) == APP_TABLES | {"alembic_version"}
    second = json.loads(cli(database, "init", "--json").stdout)  # an empty database again
    assert second["organization"]["id"] != first["organization"]["id"]


def test_every_migration_goes_up_and_down_one_step_at_a_time(database: Database) -> None:
    settings = settings_of(database)
    revisions = revisions_in_order()
    assert revisions[-1] == migrate.head_revision()
    assert len(set(revisions)) == len(revisions)
    seen: list[set[str]] = []
    for revision in revisions:
        migrate.upgrade(settings, revision)
        assert migrate.current_revision(settings) == revision
        seen.append(table_names(database))
    for index in range(len(revisions) - 1, 0, -1):
        migrate.downgrade(settings, revisions[index - 1])
        assert migrate.current_revision(settings) == revisions[index - 1]
        assert table_names(database) == seen[index - 1]
    migrate.downgrade(settings, "base")
    assert table_names(database) & APP_TABLES == set()


def _datetime_representation_only(diff: Any) -> bool:
    """A ``modify_type`` between two DateTime types that differ only in Python representation.

    ``UTCDateTime`` is a TypeDecorator over ``DateTime`` (stored as naive UTC); migrations spell the
    column ``sa.DateTime()``. Alembic compares a TypeDecorator by its ``impl``, so today it reports
    nothing here; this filter only keeps a future Alembic that compared the decorator itself from
    flagging a column whose SQL type is identical. Anything else is a real difference.
    """
    if not (isinstance(diff, list) and diff and isinstance(diff[0], tuple) and diff[0][0] == "modify_type"):
        return False
    _, _schema, _table, _column, _info, existing, wanted = diff[0]
    existing, wanted = (t.impl if isinstance(t, TypeDecorator) else t for t in (existing, wanted))
    return isinstance(existing, DateTime) and isinstance(wanted, DateTime) and existing.timezone == wanted.timezone


def test_the_models_match_the_migrations_with_no_pending_autogenerate_diff(database: Database) -> None:
    migrate.upgrade(settings_of(database))

    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    differences = [d for d in on_connection(database, diff) if not _datetime_representation_only(d)]
    assert differences == [], "the models and the migrations differ; run alembic revision --autogenerate"
