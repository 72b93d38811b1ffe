"""Run Alembic migrations programmatically (no alembic.ini needed by users).

These functions are synchronous and start their own event loop, so call them before the server's
loop starts (the CLI does) or from a worker thread.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, make_url

from orgwarden.config import Settings

if TYPE_CHECKING:  # Alembic is imported where it is used: most commands never need it
    from alembic.config import Config
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType

MIGRATIONS = Path(__file__).parent / "migrations"
# On PostgreSQL, ``usage_rollups`` is one partition per bucket width (migration 0004). The partitions
# are tables of the database but parts of one table of the models, not tables to create or drop.
PARTITIONS = frozenset({"usage_rollups_1m", "usage_rollups_1h", "usage_rollups_1d"})


def include_name(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    """Alembic's autogenerate filter: leaves the partitions out of the comparison with the models."""
    return not (type_ == "table" and name in PARTITIONS)


def alembic_config(settings: Settings) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = settings.sqlalchemy_url
    config.attributes["models_file"] = settings.models_file  # prices, for migrations that backfill costs
    return config


HEAD = "0019"  # the newest revision; a test checks it against the scripts, so a new migration must bump it


def upgrade_if_behind(settings: Settings) -> None:
    """What every CLI command does first: migrate, unless the database is already at ``HEAD``.

    Asking the database its revision is one query; loading Alembic and its scripts to find out that
    there is nothing to do cost about 0.3 s of every command."""
    if _stored_revision(settings) != HEAD:
        upgrade(settings)


def _stored_revision(settings: Settings) -> str | None:
    """``alembic_version`` read with plain SQL; ``None`` if there is no database or table yet."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    if settings.is_sqlite:
        database = make_url(settings.sqlalchemy_url).database
        if not database or database == ":memory:" or not Path(database).exists():
            return None
        import sqlite3

        try:
            with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
                row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None

    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    async def read() -> str | None:
        engine = create_async_engine(settings.sqlalchemy_url)
        try:
            async with engine.connect() as connection:
                value = await connection.scalar(text("SELECT version_num FROM alembic_version"))
                return None if value is None else str(value)
        except (SQLAlchemyError, OSError):
            return None
        finally:
            await engine.dispose()

    return asyncio.run(read())


def upgrade(settings: Settings, revision: str = "head") -> None:
    if settings.is_sqlite and settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.is_sqlite:
        from orgwarden.storage.engine import create_private

        create_private(settings.sqlalchemy_url)  # 0600, before SQLite creates it 0644
    from alembic import command

    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(settings), revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(Settings())).get_current_head()
    assert head is not None
    return head


def current_revision(settings: Settings) -> str | None:
    """The database's revision, or ``None`` when it has never been migrated."""
    from alembic.runtime.migration import MigrationContext

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

    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

    async def read() -> str | None:
        engine = create_async_engine(settings.sqlalchemy_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
        finally:
            await engine.dispose()

    return asyncio.run(read())
