"""``gateway.http1``: the upstream client against a raw asyncio server that controls every byte.

An answer whose many small chunks arrive in one read makes the client pause reading (it buffers at
most ``_PAUSE_AT`` pieces); when such an answer is complete it is taken whole (``arrived``) and the
connection, read again, must serve the next request on the same keep-alive connection.

Interim ``1xx`` answers are skipped (the final answer is the request's, and nothing of it is left
for the next request on the pooled connection); a POST is never sent twice; a body ended by the
connection's close is a complete body."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from orgwarden.gateway.http1 import _PAUSE_AT, Broken, Pool, Response

PIECES = 4 * _PAUSE_AT


def chunked_answer(body: bytes) -> bytes:
    size = -(-len(body) // PIECES)
    pieces = [body[at : at + size] for at in range(0, len(body), size)]
    chunks = b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    return head + chunks + b"0\r\n\r\n"


def test_a_complete_answer_of_many_chunks_is_taken_whole_and_the_connection_serves_the_next() -> None:
    body = b'{"text": "' + b"x" * 4000 + b'"}'

    async def scenario() -> list[tuple[bytes | None, int]]:
        connections = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            while await reader.readuntil(b"\r\n\r\n"):  # bodiless requests: the head is the request
                writer.write(chunked_answer(body))  # every chunk in one write: one read for the client
                await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        pool = Pool(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", connect_timeout=5, read_timeout=5)
        results = []
        try:
            for _ in range(3):
                response = await pool.request("GET", "/answer", [], b"")
                await asyncio.sleep(0.05)  # every chunk is in by now: the answer is complete
                results.append((response.arrived(), connections))
                await response.aclose()
        finally:
            server.close()
        return results

    results = asyncio.run(scenario())
    assert [got for got, _ in results] == [body] * 3
    assert [count for _, count in results] == [1, 1, 1]  # one connection, reused


# --------------------------------------------------------------------------------------------------
# a raw upstream: each connection runs ``answer`` per request, with the request's head and body


Answer = Callable[[int, bytes, bytes, asyncio.StreamWriter], Awaitable[bool]]  # (n, head, body, w) -> go on?


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


class RawUpstream:
    """Counts connections and requests; ``answer(n, head, body, writer)`` (n: the request's number
    over all connections, from 1) writes the bytes and says whether the connection goes on."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while (request := await read_request(reader)) is not None:
                self.requests.append(request)
                if not await self.answer(len(self.requests), *request, writer):
                    break
        finally:
            writer.close()

    async def start(self) -> tuple[asyncio.Server, Pool]:
        server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        return server, Pool(f"http://127.0.0.1:{port}", connect_timeout=5, read_timeout=5)


async def body_of(response: Response) -> bytes:
    try:
        return b"".join([chunk async for chunk in response])
    finally:
        await response.aclose()


def answer_with(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%b\r\n%b" % (len(body), extra, body)


# --------------------------------------------------------------------------------------------------
# 1xx


@pytest.mark.parametrize(
    "interim", [b"103 Early Hints\r\nlink: </style.css>; rel=preload", b"100 Continue"], ids=["103", "100"]
)
def test_an_interim_answer_is_skipped_and_each_request_gets_its_own_answer(interim: bytes) -> None:
    async def answer(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 %b\r\n\r\n" % interim)
        await writer.drain()
        await asyncio.sleep(0.05)  # the final answer comes later, in a read of its own
        writer.write(answer_with(b"answer %d" % n, b"x-final: yes\r\n"))
        await writer.drain()
        return True

    async def scenario() -> list[tuple[int, bytes, bytes | None, bytes | None]]:
        upstream = RawUpstream(answer)
        server, pool = await upstream.start()
        got = []
        try:
            for _ in range(2):
                response = await pool.request("POST", "/v1/messages", [], b"{}")
                status, link, final = response.status, response.header(b"link"), response.header(b"x-final")
                got.append((status, await body_of(response), link, final))
        finally:
            await pool.aclose()
            server.close()
        return got

    assert asyncio.run(scenario()) == [(200, b"answer 1", None, b"yes"), (200, b"answer 2", None, b"yes")]


def test_a_101_switching_protocols_answer_is_a_broken_upstream() -> None:
    async def answer(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)
        return False

    async def scenario() -> str:
        server, pool = await RawUpstream(answer).start()
        try:
            with pytest.raises(Broken) as broken:
                await pool.request("GET", "/v1/models", [], b"")
            return str(broken.value)
        finally:
            await pool.aclose()
            server.close()

    assert "switched protocols (101)" in asyncio.run(scenario())


# --------------------------------------------------------------------------------------------------
# retries


def close_unanswered_on_the_second_request(n: int) -> Answer:
    async def answer(number: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if number == n:
            return False  # read in full, then the connection closes without a byte of answer
        writer.write(answer_with(b"answer %d" % number))
        await writer.drain()
        return True

    return answer


def test_a_reused_connection_closed_unanswered_gets_a_get_sent_again_but_never_a_post() -> None:
    """The upstream reads the second request in full and closes without answering: the client
    cannot know whether it ran. A GET is sent again on a fresh connection; a POST (a Messages call,
    billed) is not: the upstream sees it exactly once and the caller gets ``Broken``."""

    async def scenario(method: str) -> tuple[list[bytes], bytes | str, int]:
        upstream = RawUpstream(close_unanswered_on_the_second_request(2))
        server, pool = await upstream.start()
        try:
            assert await body_of(await pool.request(method, "/v1/messages", [], b'{"call": 1}')) == b"answer 1"
            try:
                outcome: bytes | str = await body_of(await pool.request(method, "/v1/messages", [], b'{"call": 2}'))
            except Broken as exc:
                outcome = str(exc)
            return [body for _, body in upstream.requests], outcome, upstream.connections
        finally:
            await pool.aclose()
            server.close()

    bodies, outcome, connections = asyncio.run(scenario("POST"))
    assert bodies == [b'{"call": 1}', b'{"call": 2}']  # the second call reached the upstream exactly once
    assert outcome == "the upstream closed the connection before answering"
    assert connections == 1

    bodies, outcome, connections = asyncio.run(scenario("GET"))
    assert bodies == [b'{"call": 1}', b'{"call": 2}', b'{"call": 2}']
    assert outcome == b"answer 3"
    assert connections == 2


# --------------------------------------------------------------------------------------------------
# close-delimited bodies


@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
def test_a_body_ended_by_the_connection_closing_is_complete_and_the_connection_is_not_pooled(version: bytes) -> None:
    async def answer(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(version + b' 200 OK\r\ncontent-type: application/json\r\n\r\n{"answer": ')
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"%d}" % n)
        await writer.drain()
        return False  # the close ends the body

    async def scenario() -> tuple[list[tuple[int, bytes]], int]:
        upstream = RawUpstream(answer)
        server, pool = await upstream.start()
        try:
            got = []
            for _ in range(2):
                response = await pool.request("GET", "/v1/models", [], b"")
                got.append((response.status, await body_of(response)))
            return got, upstream.connections
        finally:
            await pool.aclose()
            server.close()

    got, connections = asyncio.run(scenario())
    assert got == [(200, b'{"answer": 1}'), (200, b'{"answer": 2}')]
    assert connections == 2


def test_a_body_cut_short_of_its_content_length_is_still_broken() -> None:
    async def answer(n: int, head: bytes, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"cut": ')
        await writer.drain()
        return False

    async def scenario() -> str:
        server, pool = await RawUpstream(answer).start()
        try:
            response = await pool.request("GET", "/v1/models", [], b"")
            with pytest.raises(Broken) as broken:
                await body_of(response)
            return str(broken.value)
        finally:
            await pool.aclose()
            server.close()

    assert asyncio.run(scenario()).startswith("the upstream closed the connection mid-answer")
