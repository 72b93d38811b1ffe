"""``orgwarden serve --workers 2``: a supervisor and two worker processes on one socket; a worker
that dies is replaced, and SIGTERM stops them all gracefully."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.conftest import TLS, make_database, redis_settings, start_server, stop_server


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(child) for child in text)
    return found


def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    db = make_database("sqlite", tmp_path)
    db.env.update(redis_settings())
    server = start_server(db, tmp_path, "--workers", "2")
    try:
        workers = children(server.process.pid)
        assert len(workers) == 2
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            now = children(server.process.pid)
            if len(now) == 2 and victim not in now:
                break
            assert time.monotonic() < deadline, f"no worker replaced the killed one: {now}"
            time.sleep(0.2)
        (replacement,) = now - workers
        while f"(pid {replacement})" not in server.log():  # "listening on ... (pid N)": it serves
            assert time.monotonic() < deadline, f"the new worker {replacement} never listened:\n{server.log()}"
            time.sleep(0.1)
        for _ in range(10):  # both serve: every request is answered
            assert httpx.get(f"{server.base_url}/health", timeout=10, verify=TLS).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
        assert server.log().count("Application shutdown complete") == 2
        for worker in now:
            assert not Path(f"/proc/{worker}").exists() or "zombie" in Path(f"/proc/{worker}/status").read_text()
    finally:
        stop_server(server)


def test_sigterm_while_a_replacement_worker_starts_still_stops_cleanly(tmp_path: Path) -> None:
    """SIGTERM just after a dead worker was replaced: the new one is still starting (its interpreter
    and imports). It used to die of the signal before catching it, and the supervisor then exited 1
    ("workers exited with status -15") although nothing had been lost. A signal that came while the
    supervisor was still spawning it never reached it: it served on until killed at the deadline."""
    db = make_database("sqlite", tmp_path)
    db.env.update(redis_settings())
    server = start_server(db, tmp_path, "--workers", "2")
    try:
        workers = children(server.process.pid)
        os.kill(min(workers), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (children(server.process.pid) - workers):  # spawned (polled every 0.2 s by the supervisor)
            assert time.monotonic() < deadline, "no worker replaced the killed one"
        # At once, without sleeping between looks: the supervisor is often still inside its spawn
        # call (the replacement not yet among the workers it forwards signals to), and the
        # replacement is still importing.
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.log()
        assert "workers exited with status" not in server.log()
    finally:
        stop_server(server)


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves the supervisor no chance to stop its workers: each notices and stops itself."""
    db = make_database("sqlite", tmp_path)
    db.env.update(redis_settings())
    server = start_server(db, tmp_path, "--workers", "2")
    try:
        workers = children(server.process.pid)
        assert len(workers) == 2
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while alive := {pid for pid in workers if _running(pid)}:
            assert time.monotonic() < deadline, f"orphaned workers still running: {alive}"
            time.sleep(0.2)
        assert server.log().count("Application shutdown complete") == 2  # stopped gracefully, not killed
    finally:
        stop_server(server)
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie waiting for its reaper)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "zombie" not in status
