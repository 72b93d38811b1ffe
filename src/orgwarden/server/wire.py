"""The bytes every answer shares: status lines, the server's own error answers, the ``date`` line."""

from __future__ import annotations

import json
from email.utils import formatdate
from http import HTTPStatus

from orgwarden import ids


def _status_line(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase.encode())


STATUS_LINE = [_status_line(code) for code in range(600)]
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def date_line() -> bytes:
    return b"date: %s\r\n" % formatdate(usegmt=True).encode()


def error_answer(status: int, kind: str, message: str, date: bytes, *, close: bool = True) -> bytes:
    """A whole answer with the Anthropic error envelope, for refusals the server makes itself."""
    request_id = ids.new_request_id()
    error = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    body = json.dumps(error).encode()
    head = [
        STATUS_LINE[status],
        date,
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"request-id: %s\r\n" % request_id.encode(),
        b"x-should-retry: false\r\n" if status in (400, 431) else b"",
        b"connection: close\r\n\r\n" if close else b"\r\n",
    ]
    return b"".join(head) + body


def header_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    """``name: value`` lines, each ended by CRLF; a CR or LF inside a name or value is refused
    (one count over the joined lines: a smuggled line break would add one)."""
    lines = b"".join([b"%s: %s\r\n" % pair for pair in headers])
    if lines.count(b"\n") != len(headers) or lines.count(b"\r") != len(headers):
        raise RuntimeError("Invalid HTTP header: a line break inside a name or value.")
    return lines
