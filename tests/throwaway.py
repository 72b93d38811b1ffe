"""Throw-away PostgreSQL and Redis servers that a test may stop, start again, freeze and thaw.

The shared servers on 127.0.0.1:5432 and :6379 must never be stopped; a test about outages starts
its own. PostgreSQL: a fresh cluster (``initdb`` as the ``postgres`` user, which CI machines of this
kind have, running as root), trust authentication on 127.0.0.1, a free port, its socket in its own
directory. Freezing sends SIGSTOP to the postmaster and every backend (the kernel still accepts TCP
connections, nothing answers: the worst case), thawing SIGCONT. Redis: ``redis-server`` as a child
process without persistence, frozen the same way.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.conftest import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (/usr/lib/postgresql/*/bin)")
    return found[-1]


def _as_postgres(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ThrowawayPostgres:
    """A PostgreSQL cluster of the test's own: ``start``/``stop``/``freeze``/``thaw``, ``dsn(db)``."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="orgwarden-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            _as_postgres(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self.frozen = False

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def outage_env(self, database: str, data_dir: Path) -> dict[str, str]:
        """An ``orgwarden serve`` environment on ``database`` with short time-outs, for outage tests."""
        return {
            "ORGWARDEN_UPSTREAM": "simulator",
            "ORGWARDEN_DATABASE_URL": self.dsn(database),
            "ORGWARDEN_SECRET_KEY": uuid.uuid4().hex * 2,
            "ORGWARDEN_DATA_DIR": str(data_dir),
            "ORGWARDEN_DATABASE_CONNECT_TIMEOUT_SECONDS": "1",
            "ORGWARDEN_DATABASE_STATEMENT_TIMEOUT_SECONDS": "2",
            "ORGWARDEN_SHUTDOWN_TIMEOUT_SECONDS": "6",
        }

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                         "-w", "start"),
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        _wait_port(self.port)

    def stop(self) -> None:
        if self.frozen:
            self.thaw()
        subprocess.run(
            _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
            check=False, capture_output=True, timeout=60,
        )  # fmt: skip

    def _pids(self) -> list[int]:
        pid_file = self.data / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [postmaster, *(int(pid) for pid in children)]

    def freeze(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        for pid in self._pids():
            os.kill(pid, signal.SIGCONT)
        self.frozen = False

    def create_database(self, name: str) -> None:
        subprocess.run(
            [_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
             f'CREATE DATABASE "{name}"'],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class ThrowawayRedis:
    """A ``redis-server`` of the test's own, without persistence: ``freeze``/``thaw``/``close``, ``url``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait(timeout=10)
