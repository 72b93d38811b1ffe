"""Engines and sessions for SQLite (embedded) and PostgreSQL (production).

Every wait on the database is bounded (``database_connect_timeout_seconds``,
``database_statement_timeout_seconds``), so a database that is down or frozen makes a request fail
(503 ``storage unavailable``) within those time-outs instead of hanging for the whole outage. The
SQLite file is created readable by its owner only (0600): it holds key hashes and the audit log.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from orgwarden.config import Settings


def create_engine(settings: Settings) -> AsyncEngine:
    connect = settings.database_connect_timeout_seconds
    statement = settings.database_statement_timeout_seconds
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True) if settings.database_url is None else None
        create_private(settings.sqlalchemy_url)
        engine = create_async_engine(settings.sqlalchemy_url, connect_args={"timeout": statement}, pool_timeout=connect)
        _sqlite_pragmas(engine, busy_ms=int(statement * 1000))
        return engine
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=connect,
        connect_args={
            "timeout": connect,  # asyncpg: connecting, TCP and start-up (a frozen server accepts, then hangs)
            "command_timeout": statement + 1,  # asyncpg: any statement, ping or ROLLBACK without an answer
            "server_settings": {"statement_timeout": str(int(statement * 1000))},
        },
    )


def create_private(url: str) -> None:
    """Create the SQLite database file 0600 if it does not exist yet (SQLite gives its -wal and -shm
    files the database file's permissions)."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _sqlite_pragmas(engine: AsyncEngine, busy_ms: int) -> None:
    """WAL for concurrent readers; ``BEGIN IMMEDIATE`` so that two workers' read-then-write
    transactions queue up on the busy timeout instead of failing to upgrade their lock."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)
