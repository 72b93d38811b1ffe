"""The simulator's Files API: upload, list, metadata, download, delete, in the API's shapes.

Files live in memory, bounded: at most ``MAX_FILES`` files and ``MAX_TOTAL_BYTES`` in all (the
oldest are forgotten first), none larger than ``MAX_FILE_BYTES`` (413). Metadata as the API's
``FileMetadata``: ``id`` ``file_...``, ``type`` ``file``, ``filename``, ``mime_type``, ``size_bytes``,
``created_at``, ``downloadable`` (true: a simulated upload may be downloaded again).
"""

from __future__ import annotations

import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.types import Receive, Scope, Send

MAX_FILES = 1000
MAX_FILE_BYTES = 100 * 1024 * 1024
MAX_TOTAL_BYTES = 256 * 1024 * 1024


@dataclass(slots=True)
class _File:
    meta: dict[str, Any]
    content: bytes


def _error(status: int, kind: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


class SimulatorFiles:
    def __init__(self) -> None:
        self._files: OrderedDict[str, _File] = OrderedDict()
        self._total = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, parts = scope["method"], scope["path"].strip("/").split("/")  # v1, files, [id, [content]]
        body, too_large = await _read(receive)
        if method == "POST" and len(parts) == 2:
            if too_large:
                await _send(send, *_error(413, "request_too_large", f"file larger than {MAX_FILE_BYTES} bytes"))
                return
            await _send(send, *self._upload(scope, body))
        elif method == "GET" and len(parts) == 2:
            data = [f.meta for f in reversed(self._files.values())]
            page = {"data": data, "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None, "has_more": False}  # fmt: skip
            await _send(send, 200, json.dumps(page).encode())
        elif len(parts) in (3, 4) and parts[2] in self._files:
            file = self._files[parts[2]]
            if method == "GET" and len(parts) == 3:
                await _send(send, 200, json.dumps(file.meta).encode())
            elif method == "GET" and parts[3:] == ["content"]:
                await _send(send, 200, file.content, file.meta["mime_type"].encode())
            elif method == "DELETE" and len(parts) == 3:
                self._forget(parts[2])
                await _send(send, 200, json.dumps({"id": parts[2], "type": "file_deleted"}).encode())
            else:
                await _send(send, *_error(404, "not_found_error", f"no such endpoint: {method} {scope['path']}"))
        elif len(parts) in (3, 4):
            await _send(send, *_error(404, "not_found_error", f"File not found: {parts[2]}"))
        else:
            await _send(send, *_error(404, "not_found_error", f"no such endpoint: {method} {scope['path']}"))

    def _upload(self, scope: Scope, body: bytes) -> tuple[int, bytes]:
        content_type = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"content-type"), "")
        part = _file_part(content_type, body)
        if part is None:
            return _error(400, "invalid_request_error", "file: a multipart/form-data part named 'file' is required")
        filename, mime_type, content = part
        file_id = "file_011C" + secrets.token_hex(12)
        meta = {
            "id": file_id,
            "type": "file",
            "filename": filename[:255],
            "mime_type": mime_type[:255],
            "size_bytes": len(content),
            "created_at": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "downloadable": True,
        }
        while self._files and (len(self._files) >= MAX_FILES or self._total + len(content) > MAX_TOTAL_BYTES):
            self._forget(next(iter(self._files)))
        self._files[file_id] = _File(meta, content)
        self._total += len(content)
        return 200, json.dumps(meta).encode()

    def _forget(self, file_id: str) -> None:
        file = self._files.pop(file_id, None)
        if file is not None:
            self._total -= len(file.content)


async def _read(receive: Receive) -> tuple[bytes, bool]:
    """The request body, read to its end but kept only up to ``MAX_FILE_BYTES`` (and a little)."""
    pieces: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        piece = message.get("body", b"")
        size += len(piece)
        if size <= MAX_FILE_BYTES + 65536:
            pieces.append(piece)
        if not message.get("more_body"):
            return b"".join(pieces), size > MAX_FILE_BYTES + 65536


def _file_part(content_type: str, body: bytes) -> tuple[str, str, bytes] | None:
    """The ``file`` part of a multipart/form-data body: its filename, content type and bytes."""
    _, _, boundary = content_type.partition("boundary=")
    boundary = boundary.split(";")[0].strip().strip('"')
    if not boundary:
        return None
    for part in body.split(b"--" + boundary.encode()):
        head, separator, content = part.partition(b"\r\n\r\n")
        if not separator:
            continue
        headers = head.decode("utf-8", "replace").lower()
        if 'name="file"' not in headers:
            continue
        filename = "file"
        original = head.decode("utf-8", "replace")
        marker = original.lower().find('filename="')
        if marker >= 0:
            start = marker + len('filename="')
            filename = original[start : original.find('"', start)]
        mime_type = "application/octet-stream"
        for line in original.split("\r\n"):
            if line.lower().startswith("content-type:"):
                mime_type = line.split(":", 1)[1].strip()
        return filename, mime_type, content.removesuffix(b"\r\n")
    return None


async def _send(send: Send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
