"""Which database failures mean "the database cannot be reached now" rather than "this is wrong".

The difference decides what happens next: an unreachable, frozen or restarting database (connection
refused or lost, a connect or statement time-out, too many connections) is worth waiting for, so
the recorder retries with backoff and the APIs answer 503 ``storage unavailable``; anything else the
database says (an integrity or data error) will be said again, so the recorder isolates the row and
an API request is a bug (500). The exception is looked at along its causes, because SQLAlchemy wraps
the driver's error and asyncio wraps time-outs.
"""

from __future__ import annotations

import sqlalchemy.exc as sa

try:  # asyncpg is a dependency, but only PostgreSQL deployments load it
    import asyncpg.exceptions as pg  # type: ignore[import-untyped]

    _DRIVER: tuple[type[BaseException], ...] = (
        pg.PostgresConnectionError,  # CannotConnectNow, ConnectionDoesNotExist, TooManyConnections, ...
        pg.InterfaceError,
        pg.QueryCanceledError,  # statement_timeout
        pg.CannotConnectNowError,
        pg.AdminShutdownError,
    )
except ImportError:  # pragma: no cover
    _DRIVER = ()

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sa.OperationalError,  # SQLite locked/busy, connection refused through the DBAPI layer
    sa.InterfaceError,
    sa.DisconnectionError,
    sa.TimeoutError,  # the pool had no connection to give within pool_timeout
    OSError,  # ConnectionRefusedError, ConnectionResetError, unreachable host
    TimeoutError,  # asyncio time-outs (connect, command_timeout)
    *_DRIVER,
)

STORAGE_UNAVAILABLE = "storage unavailable: the database cannot be reached; retry later"


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the database cannot be reached or answered too late."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, _UNAVAILABLE):
            return True
        if isinstance(current, sa.DBAPIError) and current.connection_invalidated:
            return True
        wrapped = current.orig if isinstance(current, sa.DBAPIError) else None
        current = wrapped or current.__cause__ or current.__context__
        seen += 1
    return False


def describe(exc: BaseException, limit: int = 200) -> str:
    """A one-line, bounded description of a database error: the driver's class and first line,
    never SQLAlchemy's rendering of the statement's parameters (which would put row data in logs)."""
    inner: BaseException = exc.orig if isinstance(exc, sa.DBAPIError) and exc.orig is not None else exc
    first = (str(inner).splitlines() or [""])[0]
    text = f"{type(inner).__name__}: {first}" if first else type(inner).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
