"""``gateway.http1``: the upstream client against a raw asyncio server that controls every byte.

An answer whose many small chunks arrive in one read makes the client pause reading (it buffers at
most ``_PAUSE_AT`` pieces); when such an answer is complete it is taken whole (``arrived``) and the
connection, read again, must serve the next request on the same keep-alive connection."""

from __future__ import annotations

import asyncio

from orgwarden.gateway.http1 import _PAUSE_AT, Pool

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
