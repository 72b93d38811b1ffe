"""Shared fixtures: real databases (SQLite and PostgreSQL) and real ``orgwarden serve`` processes.

PostgreSQL tests use the server on 127.0.0.1:5432 (database ``test`` for administration); each test
session creates its own throw-away databases and drops them at the end. When PostgreSQL cannot be
reached the tests that need it are skipped with a loud message, unless
``ORGWARDEN_TEST_REQUIRE_POSTGRES=1`` (set by ``.ci/run``), in which case they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anthropic
import httpx
import pytest

from orgwarden.gateway.limiter import BucketWant, Limiter, StoreUnavailable

if TYPE_CHECKING:
    from orgwarden.storage.uow import UnitOfWork

T = TypeVar("T")

PG_HOST = os.environ.get("ORGWARDEN_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ORGWARDEN_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("ORGWARDEN_TEST_PG_USER", "")
PG_ADMIN_DB = os.environ.get("ORGWARDEN_TEST_PG_DB", "test")
REQUIRE_PG = os.environ.get("ORGWARDEN_TEST_REQUIRE_POSTGRES") == "1"
ORGWARDEN = str(Path(sys.executable).with_name("orgwarden"))
BACKENDS = ["sqlite", "postgres"]


def _pg_dsn(database: str) -> str:
    user = f"{PG_USER}@" if PG_USER else ""
    return f"postgresql://{user}{PG_HOST}:{PG_PORT}/{database}"


def _pg_admin(sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(_pg_dsn(PG_ADMIN_DB), timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


_pg_state: dict[str, Any] = {}


def postgres_available() -> bool:
    if "ok" not in _pg_state:
        try:
            _pg_admin("SELECT 1")
            _pg_state["ok"] = True
        except Exception as exc:  # any failure to connect means "not available"
            _pg_state["ok"] = False
            _pg_state["why"] = f"{type(exc).__name__}: {exc}"
            sys.stderr.write(
                f"\n\n*** PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable ({_pg_state['why']}); "
                "PostgreSQL tests will be SKIPPED ***\n\n"
            )
    return bool(_pg_state["ok"])


def require_postgres() -> None:
    if postgres_available():
        return
    message = f"PostgreSQL unreachable at {PG_HOST}:{PG_PORT}: {_pg_state.get('why')}"
    if REQUIRE_PG:
        pytest.fail(message + " (ORGWARDEN_TEST_REQUIRE_POSTGRES=1)")
    pytest.skip(message)


# One TLS context for the tests' HTTP clients. httpx (and the SDK's httpx2) otherwise build one per
# client, loading the CA bundle each time: about 50 ms of CPU per client, paid thousands of times.
TLS = httpx.create_ssl_context()


class SdkHttpClient(anthropic.DefaultHttpxClient):
    """The SDK's default HTTP client (its time-outs, limits, keep-alive) on ``TLS`` or the given
    context; closed when dropped, as the one the SDK makes for itself is."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("verify", TLS)
        super().__init__(**kwargs)

    def __del__(self) -> None:
        if not self.is_closed:
            with contextlib.suppress(Exception):
                self.close()


REDIS_URL = "redis://127.0.0.1:6379/0"
REQUIRE_REDIS = os.environ.get("ORGWARDEN_TEST_REQUIRE_REDIS") == "1"


def redis_settings() -> dict[str, str]:
    """``ORGWARDEN_REDIS_URL`` for a server sharing the real Redis; skip (or, in CI, fail) without it."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            if not conn.recv(16).startswith(b"+PONG"):
                raise OSError("no PONG")
    except OSError as exc:
        message = f"Redis unreachable at 127.0.0.1:6379: {exc}"
        if REQUIRE_REDIS:
            pytest.fail(message + " (ORGWARDEN_TEST_REQUIRE_REDIS=1)")
        pytest.skip(message)
    return {"ORGWARDEN_REDIS_URL": REDIS_URL}


@dataclass
class Database:
    """A fresh, empty database and the ORGWARDEN_* environment that points at it."""

    backend: str
    env: dict[str, str]
    _cleanup: list[str] = field(default_factory=list)

    @property
    def settings_kwargs(self) -> dict[str, str]:
        return {k.removeprefix("ORGWARDEN_").lower(): v for k, v in self.env.items()}


def make_database(backend: str, tmp: Path, *, migrated: bool = False) -> Database:
    """A fresh database; ``migrated``: already at the newest migration, a copy of one this test
    process migrated with ``orgwarden db upgrade`` (for servers of their own, whose ``init`` then
    has no migrations left to run: the migrations are tested in tests/integration)."""
    # Tests never reach a real upstream: the simulator answers the data plane.
    common = {"ORGWARDEN_UPSTREAM": "simulator"}
    if backend == "sqlite":
        if migrated:
            (tmp / "data").mkdir(parents=True, exist_ok=True)
            shutil.copy2(_migrated_template("sqlite"), tmp / "data" / SQLITE_FILE)  # 0600, as orgwarden makes it
        return Database("sqlite", {**common, "ORGWARDEN_DATA_DIR": str(tmp / "data")})
    require_postgres()
    name = f"orgwarden_test_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{_migrated_template("postgres")}"' if migrated else ""
    _pg_admin(f'CREATE DATABASE "{name}"{template}')
    env = {**common, "ORGWARDEN_DATABASE_URL": _pg_dsn(name), "ORGWARDEN_SECRET_KEY": uuid.uuid4().hex * 2}
    return Database("postgres", env, [name])


SQLITE_FILE = "orgwarden.sqlite3"
_templates: dict[str, str] = {}  # backend -> this process's migrated database (SQLite file, PostgreSQL name)


def _migrated_template(backend: str) -> str:
    if backend not in _templates:
        if backend == "sqlite":
            data_dir = Path(tempfile.mkdtemp(prefix="orgwarden-template-")) / "data"
            cli(Database("sqlite", {"ORGWARDEN_DATA_DIR": str(data_dir)}), "db", "upgrade")
            _templates[backend] = str(data_dir / SQLITE_FILE)
        else:
            name = f"orgwarden_template_{uuid.uuid4().hex[:12]}"
            _pg_admin(f'CREATE DATABASE "{name}"')
            cli(Database("postgres", {"ORGWARDEN_DATABASE_URL": _pg_dsn(name)}), "db", "upgrade")
            _templates[backend] = name
    return _templates[backend]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Each test process drops the templates it made."""
    for backend, template in _templates.items():
        if backend == "sqlite":
            shutil.rmtree(Path(template).parent.parent, ignore_errors=True)
        else:
            _pg_admin(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    _templates.clear()


def drop_database(db: Database) -> None:
    for name in db._cleanup:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh empty database, once per backend."""
    db = make_database(request.param, tmp_path)
    yield db
    drop_database(db)


@pytest.fixture
def sqlite_database(tmp_path: Path) -> Iterator[Database]:
    """A fresh empty SQLite database: for behaviour that does not depend on the backend (argument
    parsing, refusals), where running the slow CLI twice would only cost time."""
    db = make_database("sqlite", tmp_path)
    yield db
    drop_database(db)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now, for a server about to bind it. Picked at random below the ephemeral range
    (which the kernel hands out for ``bind(0)`` and as outgoing connections' local ports): a port
    from that range, let go, could become a connection's local port before the server binds it."""
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(10_000, max(low, 10_001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # below the range all taken: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(db: Database, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real ``orgwarden`` command against ``db``."""
    env = {**os.environ, **db.env, "COLUMNS": "200"}
    env.pop("ORGWARDEN_CONFIG", None)
    result = subprocess.run([ORGWARDEN, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"orgwarden {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result


@dataclass
class Server:
    """A running ``orgwarden serve`` process on an initialized database."""

    db: Database
    base_url: str
    admin_key: str
    organization: dict[str, Any]
    user: dict[str, Any]
    process: subprocess.Popen[str]
    log_path: Path
    verify: ssl.SSLContext | bool = TLS  # served over TLS: a context that trusts its test CA

    def client(self, api_key: str | None = None, **kwargs: Any) -> anthropic.Anthropic:
        if "http_client" not in kwargs:
            kwargs["http_client"] = SdkHttpClient(verify=self.verify)
        return anthropic.Anthropic(api_key=api_key or self.admin_key, base_url=self.base_url, max_retries=0, **kwargs)

    def http(self, api_key: str | None = None) -> httpx.Client:
        headers = {"anthropic-version": "2023-06-01", "x-api-key": api_key or self.admin_key}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30, verify=self.verify)

    def log(self) -> str:
        return self.log_path.read_text()


def wait_until_healthy(
    process: subprocess.Popen[str], base_url: str, log_path: Path, verify: ssl.SSLContext | bool = TLS
) -> None:
    """Wait (30 s at most) for a starting ``orgwarden serve`` to answer 200 on ``/health``; kill it
    and fail with its log if it exits or does not. One client for every poll: a client per poll
    cost the test process ~50 ms of CPU each time, taken from the server starting beside it."""
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=1, verify=TLS if verify is True else verify) as http:
        while True:
            try:
                if http.get(f"{base_url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"orgwarden serve did not start:\n{log_path.read_text()}")
            time.sleep(0.05)


def spawn_serve(env: dict[str, str], tmp: Path, *args: str, scheme: str = "http", **client: Any) -> Server:
    """Start ``orgwarden serve`` with ``env`` on a free port and wait for ``/health``.

    The returned Server has no admin key or organization filled in; ``start_server`` adds them."""
    port = free_port()
    log_path = tmp / f"server-{port}.log"
    handle = log_path.open("w")
    process = subprocess.Popen(
        [ORGWARDEN, "serve", "--port", str(port), *args],
        env={**os.environ, **env},
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"{scheme}://127.0.0.1:{port}"
    wait_until_healthy(process, base_url, log_path, **client)
    return Server(Database("", env), base_url, "", {}, {}, process, log_path)


def start_server(db: Database, tmp: Path, *extra: str) -> Server:
    """Initialize ``db`` with ``orgwarden init`` and serve it."""
    init = json.loads(cli(db, "init", "--json", "--org-name", "Acme", "--admin-email", "root@acme.test").stdout)
    spawned = spawn_serve(db.env, tmp, *extra)
    return Server(
        db, spawned.base_url, init["admin_api_key"], init["organization"], init["user"], spawned.process,
        spawned.log_path,
    )  # fmt: skip


def another_instance(first: Server, tmp: Path, *extra: str) -> Server:
    """A second ``orgwarden serve`` on the database of ``first`` (already initialized)."""
    spawned = spawn_serve(first.db.env, tmp, *extra)
    return Server(
        first.db, spawned.base_url, first.admin_key, first.organization, first.user, spawned.process,
        spawned.log_path,
    )  # fmt: skip


@contextlib.contextmanager
def dedicated_server(backend: str, settings: dict[str, str], *extra: str) -> Iterator[Server]:
    """A server of its own with extra ``ORGWARDEN_*`` settings, torn down (database too) afterwards."""
    with tempfile.TemporaryDirectory(prefix="orgwarden-test-") as tmp:
        db = make_database(backend, Path(tmp), migrated=True)
        db.env.update(settings)
        srv = start_server(db, Path(tmp), *extra)
        try:
            yield srv
        finally:
            stop_server(srv)
            drop_database(db)


def query_db(db: Database, query: Callable[[UnitOfWork], Awaitable[T]]) -> T:
    """Run ``query`` in a unit of work on the real database behind ``db`` (to read what servers wrote)."""
    from orgwarden.config import load_settings
    from orgwarden.storage.engine import create_engine, session_factory
    from orgwarden.storage.uow import UnitOfWorkFactory

    async def run() -> T:
        engine = create_engine(load_settings(**db.settings_kwargs))
        try:
            async with UnitOfWorkFactory(session_factory(engine))() as uow:
                return await query(uow)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
    text = server.log()
    assert "Traceback" not in text, f"the server logged a traceback:\n{text}"


@pytest.fixture(scope="module", params=BACKENDS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """One server per backend per test module (tests in a module share its organization)."""
    with dedicated_server(request.param, {}) as srv:
        yield srv


@pytest.fixture
def client(server: Server) -> anthropic.Anthropic:
    return server.client()


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def assert_error(response: httpx.Response, status: int, error_type: str, message_part: str) -> dict[str, Any]:
    """Assert the Anthropic error envelope, status, type, and that the message names the problem."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == error_type, body
    assert message_part.lower() in body["error"]["message"].lower(), body
    assert body["request_id"].startswith("req_"), body
    assert response.headers["request-id"] == body["request_id"]
    return dict(body)


async def settled(store: Limiter, buckets: Sequence[BucketWant], counters: Mapping[str, int]) -> Mapping[str, int]:
    """``store.settle``, waited for: the counters' new values once the store has applied it (the
    gateway waits for nobody; tests that look at the store afterwards do)."""
    done: asyncio.Future[Mapping[str, int] | StoreUnavailable] = asyncio.get_running_loop().create_future()
    store.settle(buckets, counters, done.set_result)
    values = await done
    if isinstance(values, StoreUnavailable):
        raise values
    return values
