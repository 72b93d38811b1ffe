"""A real server process for the server's tests, and a raw-socket client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port
from tests.e2e.mitm import stop_process

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def running(
    app: str = "tests.server.app:app", *args: str, **settings: str
) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``python -m orgwarden.server app`` on a free port with ``ORGWARDEN_<NAME>`` settings."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **{f"ORGWARDEN_{k.upper()}": v for k, v in settings.items()}}
    process = subprocess.Popen([sys.executable, "-m", "orgwarden.server", app, "--port", str(port), *args],
                               cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_listening(port, process)
        yield port, process
    finally:
        stop_process(process)


def wait_listening(port: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert process.poll() is None, f"the server exited: {process.stderr.read() if process.stderr else ''}"
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.05)


def request(method: str, path: str, *extra: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: test", *extra]
    if body:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
