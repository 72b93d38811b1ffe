"""Alembic migrations on SQLite and PostgreSQL: up to head, down to base, up again, one step at a time,
and the models (``storage.tables``) agree with what the migrations build."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import DateTime, inspect, text
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
    """The database's tables, less PostgreSQL's partitions of ``usage_rollups`` (parts of one model
    table: ``test_usage_rollups_are_partitioned_by_width_on_postgresql``)."""
    return set(on_connection(db, lambda connection: inspect(connection).get_table_names())) - migrate.PARTITIONS


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
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_name": migrate.include_name}
        )
        return list(compare_metadata(context, Base.metadata))

    differences = [d for d in on_connection(database, diff) if not _datetime_representation_only(d)]
    assert differences == [], "the models and the migrations differ; run alembic revision --autogenerate"


def test_usage_rollups_are_partitioned_by_width_on_postgresql(database: Database) -> None:
    """Each report reads one width; on PostgreSQL each width has its own partition, so a daily
    report reads a heap of daily rows only (SQLite keeps one table)."""
    migrate.upgrade(settings_of(database))

    def placed(connection: Connection) -> list[tuple[str, str]]:
        connection.execute(text(
            "INSERT INTO usage_rollups VALUES ('org', :w, '2026-10-01', 'wrkspc_a', 'apikey_a', 'm', 'standard', "
            "'0-200k', 'global', 'standard', 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0, '')"
        ), [{"w": w} for w in ("1m", "1h", "1d")])  # fmt: skip
        if connection.dialect.name != "postgresql":
            return []
        query = "SELECT tableoid::regclass::text, bucket_width FROM usage_rollups ORDER BY 1"
        return [(str(r[0]), str(r[1])) for r in connection.execute(text(query))]

    rows = on_connection(database, placed)
    if database.backend == "postgres":
        assert rows == [("usage_rollups_1d", "1d"), ("usage_rollups_1h", "1h"), ("usage_rollups_1m", "1m")]
        names = set(on_connection(database, lambda connection: inspect(connection).get_table_names()))
        assert names >= migrate.PARTITIONS
    else:
        assert rows == []


def test_0004_rolls_up_the_records_written_before_it_with_their_metered_totals(database: Database) -> None:
    """Records of /v1/messages written at revision 0003 are rolled up by 0004 into the three widths;
    costs per kind are recomputed from tokens, and what differs from the stored total (here an
    unpriced model's cost) counts as input cost, so the rolled-up total is the metered total."""
    settings = settings_of(database)
    migrate.upgrade(settings, "0003")
    columns = ("id", "organization_id", "workspace_id", "api_key_id", "model", "service_tier", "inference_geo",
               "context_window", "speed", "endpoint", "stream", "completed", "input_tokens", "output_tokens",
               "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cache_read_tokens", "web_search_requests",
               "cost_picodollars", "status", "latency_ms", "created_at")  # fmt: skip
    at = datetime(2025, 6, 1, 10, 30, 15)

    def row(n: int, model: str, endpoint: str, cost: int, geo: str = "global") -> dict[str, Any]:
        values = (f"req_{n}", "org", "wrkspc_a", "apikey_a", model, "standard", geo, "0-200k", "standard", endpoint,
                  False, True, 1000, 100, 0, 0, 0, 0, cost, 200, 1, at + timedelta(minutes=n))  # fmt: skip
        return dict(zip(columns, values, strict=True))

    sonnet = 1000 * 3 * 10**6 + 100 * 15 * 10**6  # claude-sonnet-4-5: $3 / $15 per million tokens
    rows = [
        row(1, "claude-sonnet-4-5-20250929", "messages", sonnet),
        row(2, "claude-sonnet-4-5-20250929", "messages", sonnet),
        row(3, "claude-unpriced-model", "messages", 777),  # priced by an override at the time
        row(4, "claude-sonnet-4-5-20250929", "count_tokens", 0),  # not a message: not rolled up
    ]

    def insert(connection: Connection) -> None:
        connection.execute(text(f"INSERT INTO usage_records ({', '.join(columns)}) "
                                f"VALUES ({', '.join(':' + c for c in columns)})"), rows)  # fmt: skip
        connection.commit()

    on_connection(database, insert)
    migrate.upgrade(settings)

    def rollups(connection: Connection) -> list[Any]:
        query = ("SELECT bucket_width, model, inference_geo, requests, input_tokens, output_tokens, cost_input, "
                 "cost_output FROM usage_rollups ORDER BY bucket_width, bucket_start, model")  # fmt: skip
        return [tuple(r) for r in connection.execute(text(query))]

    got = on_connection(database, rollups)
    per_width = {w: [r for r in got if r[0] == w] for w in ("1d", "1h", "1m")}
    # one day and one hour hold all three records; minutes 10:31, 10:32 and 10:33 one each
    for width in ("1d", "1h"):
        by_model = {r[1]: r[2:] for r in per_width[width]}
        assert by_model == {
            "claude-sonnet-4-5-20250929": ("not_available", 2, 2000, 200, 2 * 1000 * 3 * 10**6, 2 * 100 * 15 * 10**6),
            "claude-unpriced-model": ("global", 1, 1000, 100, 777, 0),
        }
    assert [r[3] for r in per_width["1m"]] == [1, 1, 1]
    assert len(got) == 2 + 2 + 3


def test_head_names_the_newest_migration_so_commands_can_skip_alembic_when_current(database: Database) -> None:
    """``migrate.HEAD`` must be bumped with every new migration: the CLI trusts it to skip Alembic."""
    assert migrate.HEAD == migrate.head_revision() == revisions_in_order()[-1]
    settings = settings_of(database)
    assert migrate._stored_revision(settings) is None  # no database (SQLite) or no table yet
    migrate.upgrade(settings, revisions_in_order()[-2])
    assert migrate._stored_revision(settings) == revisions_in_order()[-2]
    migrate.upgrade_if_behind(settings)  # behind: migrates
    assert migrate._stored_revision(settings) == migrate.HEAD == migrate.current_revision(settings)
