"""``api.http_protocol``: uvicorn's protocol with cheaper response writing answers exactly as
uvicorn does, head and body in one write, for every kind of response (a real uvicorn process
serving ``protocol_app`` through it; raw sockets see the bytes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVE = (
    "import sys, uvicorn; from orgwarden.api.http_protocol import Protocol; "
    "uvicorn.run('tests.api.protocol_app:app', port=int(sys.argv[1]), http=Protocol, loop='uvloop', "
    "lifespan='off', log_level='critical')"
)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    number = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVE, str(number)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", number), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.05)
    yield number
    process.terminate()
    process.wait(timeout=10)


def request(method: str, path: str) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_whole_response_arrives_in_one_piece_and_the_connection_stays_open(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(request("GET", "/json"))
            got = sock.recv(65536)  # one write on loopback: one read holds head and body
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"\r\ncontent-type: application/json" in head
            assert b"\r\ncontent-length: 11" in head
            assert body == b'{"ok":true}'


def test_a_streamed_body_is_chunked_and_each_part_is_sent_as_it_comes(port: int) -> None:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client, client.stream("GET", "/chunks") as response:
        assert response.headers["transfer-encoding"] == "chunked"
        assert b"".join(response.iter_raw()) == b"one two three"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request("GET", "/chunks"))
        first = sock.recv(65536)  # the head goes with the first part, not before it
        assert first.endswith(b"\r\n\r\n4\r\none \r\n")


def test_head_and_204_answers_have_no_body(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request("HEAD", "/json"))
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert head.endswith(b"\r\n\r\n")
        assert b"content-length: 11" in head
        sock.sendall(request("GET", "/empty"))
        empty = sock.recv(65536)
        assert empty.startswith(b"HTTP/1.1 204 No Content\r\n")
        assert empty.endswith(b"\r\n\r\n")
        assert b"transfer-encoding" not in empty


def test_connection_close_is_honoured(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request("GET", "/close"))
        got = read_all(sock)  # ends: the server closed the connection
    assert b"\r\nconnection: close\r\n" in got
    assert got.endswith(b"\r\n\r\nbye")


@pytest.mark.parametrize("path", ["/bad-header", "/short"])
def test_an_invalid_response_is_never_completed(port: int, path: str) -> None:
    """A header value with CR/LF (response splitting) or a body shorter than its content-length:
    uvicorn's rules, so the connection is closed and no complete answer is seen."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request("GET", path))
        got = read_all(sock)
    assert b"set-cookie" not in got
    assert not got.endswith(b"never")
    if path == "/short":
        assert got.endswith(b"12345")  # what was sent went out; the connection then closed
