"""SIGTERM ends the server within ``shutdown_timeout_seconds`` whatever its clients do, finishing
what it can; start-up failures end it at once with one line (issue 15: three slow clients once kept
SIGTERM from finishing for more than 45 s)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import Server, make_database, start_server, stop_server, unique
from tests.server.helpers import ROOT, read_all, request, running

BODY = json.dumps({"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})


def trickle(port: int, at_once: bytes, slowly: bytes, stop: threading.Event) -> None:
    """A slow client: ``at_once``, then ``slowly`` one byte every 0.2 s, until the server closes."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(at_once)
            for byte in slowly:
                if stop.is_set():
                    return
                sock.sendall(bytes([byte]))
                time.sleep(0.2)
    except OSError:
        return


def test_three_slow_clients_do_not_keep_sigterm_from_finishing(tmp_path: Path) -> None:
    db = make_database("sqlite", tmp_path)
    db.env["ORGWARDEN_SHUTDOWN_TIMEOUT_SECONDS"] = "3"
    server: Server = start_server(db, tmp_path)
    stop = threading.Event()
    try:
        with server.http() as http:
            created = http.post("/v1/organizations/api_keys", json={"name": unique("slow"), "workspace_id": None})
        key = created.json()["key"]
        port = int(server.base_url.rsplit(":", 1)[1])
        data_plane = (f"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\ncontent-type: application/json\r\n"
                      f"content-length: {len(BODY)}\r\n\r\n").encode()  # fmt: skip
        admin = (f"POST /v1/organizations/workspaces HTTP/1.1\r\nhost: x\r\nx-api-key: {server.admin_key}\r\n"
                 f"content-length: {len(BODY)}\r\n\r\n").encode()  # fmt: skip
        clients = [
            threading.Thread(target=trickle, args=(port, b"GET /v1/models HTTP/1.1\r\nhost: x\r\n" * 3, b"", stop)),
            threading.Thread(target=trickle, args=(port, data_plane, BODY.encode(), stop)),
            threading.Thread(target=trickle, args=(port, admin, BODY.encode(), stop)),
        ]
        for client in clients:
            client.start()
        time.sleep(1.5)  # the head of the first is still arriving; the others are in their bodies
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=15)  # the deadline is 3 s; 15 leaves room for a busy machine
        except subprocess.TimeoutExpired:
            raise AssertionError("SIGTERM did not finish: slow clients kept the server running") from None
        assert code == 0, server.log()
        assert "Application shutdown complete" in server.log()
        assert "closing 2 connections still open at the shutdown deadline" in server.log()
    finally:
        stop.set()
        stop_server(server)


def test_a_request_in_progress_is_answered_and_an_idle_connection_closed_at_once() -> None:
    with running("tests.server.app:app", "--no-lifespan", shutdown_timeout_seconds="10") as (port, process):
        busy = socket.create_connection(("127.0.0.1", port), timeout=10)
        idle = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            idle.sendall(request("GET", "/json"))
            assert idle.recv(65536).startswith(b"HTTP/1.1 200 OK")
            busy.sendall(request("GET", "/sleep?1"))
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            assert read_all(idle) == b""  # closed at once, without a word
            answer = read_all(busy)
            assert answer.startswith(b"HTTP/1.1 200 OK")
            assert b"\r\nconnection: close\r\n" in answer
            assert answer.endswith(b'{"slept": true}')
            assert process.wait(timeout=10) == 0
        finally:
            busy.close()
            idle.close()


def test_a_shutdown_that_passes_its_deadline_exits_anyway_with_status_1() -> None:
    with running("tests.server.app:hanging_shutdown", shutdown_timeout_seconds="2") as (_, process):
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 1
        assert process.stderr is not None
        assert "shutdown did not finish within 2 seconds" in process.stderr.read()


def test_a_failed_start_up_exits_with_status_3_and_one_line() -> None:
    command = [sys.executable, "-m", "orgwarden.server", "tests.server.app:failing_startup", "--port", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "ERROR:  start-up failed: ConnectionRefusedError: the database at db.internal:5432 refused the connection"
    ]
