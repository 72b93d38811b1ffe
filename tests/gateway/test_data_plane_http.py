"""HTTP/1.1 on the data plane, byte by byte: what ``orgwarden serve`` does with the requests it
hands straight to the gateway (``server/direct.py``) and with those it leaves to ASGI.

Raw sockets, so that what is on the wire is what is checked: ``Expect: 100-continue``, pipelining,
HTTP/1.0, a body arriving in pieces, the ``date`` header the server gives every answer, and the same
answers from the ASGI path (a ``%``-escaped path is left to it).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx
import pytest

from tests.conftest import TLS, Server, unique
from tests.gateway.test_tenant_restrictions import read_audit

MODEL = "claude-sonnet-4-6"
BODY = json.dumps({"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}).encode()
STREAM_BODY = json.dumps(
    {"model": MODEL, "max_tokens": 16, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
).encode()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("http"), "workspace_id": None})
    assert response.status_code == 200, response.text
    return str(response.json()["key"])


def port_of(server: Server) -> int:
    return int(server.base_url.rsplit(":", 1)[1])


class Answer:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key == name]
        return values[0] if values else None


class Wire:
    """One client connection, reading answers off it one at a time."""

    def __init__(self, server: Server) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port_of(server)), timeout=10)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            assert self._fill(), f"connection closed mid-answer: {self.buffer!r}"
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            assert self._fill(), "connection closed mid-body"
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read(self) -> Answer:
        status = int(self._line().split()[1])
        headers: list[tuple[str, str]] = []
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name.lower(), value.strip()))
        answer = Answer(status, headers, b"")
        if status == 100:
            return answer
        length = answer.header("content-length")
        if length is not None:
            answer.body = self._exactly(int(length))
            return answer
        assert answer.header("transfer-encoding") == "chunked", headers
        while size := int(self._line(), 16):
            answer.body += self._exactly(size)
            assert self._exactly(2) == b"\r\n"
        assert self._line() == b""
        return answer

    def closed(self) -> bool:
        """True once the server has closed the connection (after what was read)."""
        return self.buffer == b"" and not self._fill()


def request(server: Server, key: str | None, body: bytes = BODY, *, path: str = "/v1/messages",
            version: str = "1.1", extra: tuple[str, ...] = ()) -> bytes:  # fmt: skip
    lines = [f"POST {path} HTTP/{version}", f"host: 127.0.0.1:{port_of(server)}", "content-type: application/json",
             "anthropic-version: 2023-06-01", f"content-length: {len(body)}", *extra]  # fmt: skip
    if key is not None:
        lines.append(f"x-api-key: {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def assert_message(answer: Answer, server: Server) -> None:
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["type"] == "message"
    assert (answer.header("request-id") or "").startswith("req_")
    assert answer.header("anthropic-organization-id") == server.organization["id"]
    assert answer.header("date") is not None  # the server's default header, on both paths


def test_expect_100_continue_gets_the_interim_answer_before_the_body_is_sent(server: Server, key: str) -> None:
    with Wire(server) as wire:
        whole = request(server, key, extra=("expect: 100-continue",))
        head, _, body = whole.partition(b"\r\n\r\n")
        wire.send(head + b"\r\n\r\n")
        assert wire.read().status == 100  # before a byte of the body was sent
        wire.send(body)
        assert_message(wire.read(), server)


def test_pipelined_requests_are_answered_in_order_on_one_connection(server: Server, key: str) -> None:
    with Wire(server) as wire:
        wire.send(request(server, key) + request(server, None) + request(server, key, STREAM_BODY))
        first, second, third = wire.read(), wire.read(), wire.read()
        assert_message(first, server)
        assert second.status == 401
        assert json.loads(second.body)["error"]["type"] == "authentication_error"
        assert third.status == 200
        assert (third.header("content-type") or "").startswith("text/event-stream")
        assert third.body.rstrip().endswith(b'data: {"type": "message_stop"}')
        ids = {first.header("request-id"), second.header("request-id"), third.header("request-id")}
        assert len(ids) == 3
        wire.send(request(server, key))  # still open for more
        assert_message(wire.read(), server)


def test_an_http_1_0_request_is_answered_and_the_connection_closed(server: Server, key: str) -> None:
    with Wire(server) as wire:
        wire.send(request(server, key, version="1.0"))
        answer = wire.read()
        assert_message(answer, server)
        assert answer.header("connection") == "close"
        assert wire.closed()


def test_a_body_arriving_in_pieces_is_read_whole(server: Server, key: str) -> None:
    with Wire(server) as wire:
        whole = request(server, key)
        head, _, body = whole.partition(b"\r\n\r\n")
        wire.send(head + b"\r\n\r\n" + body[:10])
        for start in range(10, len(body), 25):
            time.sleep(0.05)
            wire.send(body[start : start + 25])
        assert_message(wire.read(), server)


def test_a_client_that_leaves_before_its_body_is_whole_breaks_nothing(server: Server, key: str) -> None:
    with Wire(server) as wire:
        whole = request(server, key)
        wire.send(whole[: len(whole) - 20])
        time.sleep(0.1)
    with httpx.Client(
        base_url=server.base_url, headers={"x-api-key": key, "anthropic-version": "2023-06-01"}, verify=TLS
    ) as http:
        assert http.post("/v1/messages", content=BODY, headers={"content-type": "application/json"}).status_code == 200
    assert "Traceback" not in server.log()
    assert "unhandled error" not in server.log()


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/m%65ssages"], ids=["direct", "asgi"])
def test_both_paths_answer_alike(server: Server, key: str, path: str) -> None:
    """``/v1/m%65ssages`` is ``/v1/messages`` once unescaped; the fast path leaves escaped paths to
    ASGI, where the gateway is the same pipeline behind ``AsgiExchange``."""
    with Wire(server) as wire:
        wire.send(request(server, key, path=path))
        assert_message(wire.read(), server)
        wire.send(request(server, key, STREAM_BODY, path=path))
        stream = wire.read()
        assert stream.status == 200
        assert b"event: message_stop" in stream.body
        assert stream.header("content-length") is None  # chunked, whatever the upstream framed it as
        wire.send(request(server, None, path=path))
        refused = wire.read()
        assert refused.status == 401
        assert refused.header("x-should-retry") == "false"
        envelope: dict[str, Any] = json.loads(refused.body)
        assert envelope["request_id"] == refused.header("request-id")
        assert refused.header("content-length") == str(len(refused.body))


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/m%65ssages"], ids=["direct", "asgi"])
def test_a_trusted_proxys_forwarded_address_is_the_audited_source(server: Server, key: str, path: str) -> None:
    """The server trusts ``X-Forwarded-For`` from 127.0.0.1 by default (``forwarded_allow_ips``); a
    refused request's audit event names the address the proxy forwarded, on both paths."""
    with Wire(server) as wire:
        other_org = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
        wire.send(request(server, key, path=path, extra=(f"anthropic-allowed-org-ids: {other_org}",
                                                         "x-forwarded-for: 203.0.113.9")))  # fmt: skip
        answer = wire.read()
    assert answer.status == 403
    request_id = answer.header("request-id")
    assert request_id is not None
    event = read_audit(server, {request_id})[request_id]
    assert event.source_ip == "203.0.113.9"
