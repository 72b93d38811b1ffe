"""Run Alembic migrations programmatically (no alembic.ini needed by users).

These functions are synchronous and start their own event loop, so call them before the server's
loop starts (the CLI does) or from a worker thread.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, make_url

from orgwarden.config import Settings

MIGRATIONS = Path(__file__).parent / "migrations"
# On PostgreSQL, ``usage_rollups`` is one partition per bucket width (migration 0004). The partitions
# are tables of the database but parts of one table of the models, not tables to create or drop.
PARTITIONS = frozenset({"usage_rollups_1m", "usage_rollups_1h", "usage_rollups_1d"})


def include_name(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    """Alembic's autogenerate filter: leaves the partitions out of the comparison with the models."""
    return not (type_ == "table" and name in PARTITIONS)


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = settings.sqlalchemy_url
    config.attributes["models_file"] = settings.models_file  # prices, for migrations that backfill costs
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    if settings.is_sqlite and settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config(Settings())).get_current_head()
    assert head is not None
    return head


def current_revision(settings: Settings) -> str | None:
    """The database's revision, or ``None`` when it has never been migrated."""
    sync_url = settings.sqlalchemy_url.replace("+aiosqlite", "").replace("+asyncpg", "+psycopg")
    if not settings.is_sqlite:
        return _current_revision_async(settings)
    database = make_url(sync_url).database
    if database and database != ":memory:" and not Path(database).exists():
        return None  # no file yet: never migrated (and reading must not create it)
    engine = create_engine(sync_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _current_revision_async(settings: Settings) -> str | None:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def read() -> str | None:
        engine = create_async_engine(settings.sqlalchemy_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
        finally:
            await engine.dispose()

    return asyncio.run(read())
