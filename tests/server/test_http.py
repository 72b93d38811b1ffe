"""``orgwarden.server``: HTTP/1.1 on the wire for ASGI answers, head and body in one write, for every
kind of response (a real server process serving ``tests.server.app``; raw sockets see the bytes)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import TLS
from tests.server.helpers import ROOT, read_all, request, running


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with running("tests.server.app:app", "--no-lifespan") as (number, _):
        yield number


def test_a_whole_response_arrives_in_one_piece_and_the_connection_stays_open(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(request("GET", "/json"))
            got = sock.recv(65536)  # one write on loopback: one read holds head and body
            head, _, body = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\ndate: ")
            assert b"\r\ncontent-type: application/json" in head
            assert b"\r\ncontent-length: 11" in head
            assert body == b'{"ok":true}'


def test_a_streamed_body_is_chunked_and_each_part_is_sent_as_it_comes(port: int) -> None:
    with (
        httpx.Client(base_url=f"http://127.0.0.1:{port}", verify=TLS) as client,
        client.stream("GET", "/chunks") as response,
    ):
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


def test_a_response_with_a_forged_header_line_becomes_a_500_envelope(port: int) -> None:
    """A header value with CR/LF (response splitting) never reaches the wire: nothing was sent yet,
    so the client gets the error envelope instead, and no traceback."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request("GET", "/bad-header"))
        got = read_all(sock)
    assert b"set-cookie" not in got
    assert got.startswith(b"HTTP/1.1 500 ")
    envelope = json.loads(got.partition(b"\r\n\r\n")[2])
    assert envelope["type"] == "error"
    assert envelope["error"]["type"] == "api_error"
    assert envelope["request_id"].startswith("req_")
    assert b"Traceback" not in got


def test_an_app_that_raises_gets_the_client_an_envelope_not_a_traceback(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request("GET", "/raise"))
        got = read_all(sock)
    assert got.startswith(b"HTTP/1.1 500 ")
    assert b"a bug in the app" not in got
    assert json.loads(got.partition(b"\r\n\r\n")[2])["error"]["type"] == "api_error"


def test_a_body_shorter_than_its_content_length_is_never_completed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request("GET", "/short"))
        got = read_all(sock)
    assert got.endswith(b"12345")  # what was sent went out; the connection then closed


def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request("GET", "/sleep", body=b"") .replace(b"/sleep", b"/sleep?0.3") + request("GET", "/json")
                     + request("POST", "/echo", body=b"x" * 1000))  # fmt: skip
        got = b""
        while got.count(b"HTTP/1.1 200") < 3 or not got.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
    first, second, third = got.index(b'{"slept"'), got.index(b'{"ok"'), got.index(b'{"size": 1000}')
    assert first < second < third


def test_expect_100_continue_is_answered_when_the_body_is_read(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        head = request("POST", "/echo", "content-length: 5", "expect: 100-continue")
        sock.sendall(head)
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert sock.recv(65536).endswith(b'{"size": 5}')


def test_the_scope_has_the_decoded_path_the_raw_path_and_the_query(port: int) -> None:
    response = httpx.get(f"http://127.0.0.1:{port}/sc%6Fpe?a=1&b=%20", verify=TLS)
    assert response.json() == {"path": "/scope", "raw_path": "/sc%6Fpe", "query": "a=1&b=%20", "client": "127.0.0.1",
                               "scheme": "http", "method": "GET"}  # fmt: skip


def test_serving_does_not_import_uvicorn() -> None:
    code = ("import sys, orgwarden.cli.main, orgwarden.server.run, orgwarden.api.app; "
            "assert 'uvicorn' not in sys.modules, [m for m in sys.modules if 'uvicorn' in m]")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
