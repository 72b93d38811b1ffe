"""The Files API through the gateway, scoped to the key's workspace.

The upstream key may be the organization's, for every workspace, so the upstream cannot tell
workspaces' files apart: orgwarden records each file uploaded through it with its workspace
(``storage/files.py``) and answers for that record:

* ``POST /v1/files``: the multipart body streamed to the upstream as it arrives (up to
  ``max_file_bytes``, the API's 500 MB by default; 413 naming it), the upstream's answer recorded
  with the key's workspace, then relayed;
* ``GET /v1/files``: the workspace's files from that record, newest first, paged like the API
  (``limit``, ``after_id``, ``before_id``; ``data``, ``first_id``, ``last_id``, ``has_more``);
* ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content`` (streamed back as it comes),
  ``DELETE /v1/files/{id}``: forwarded only for a file of the key's workspace; any other is 404
  naming it. A file deleted is forgotten.

A file uploaded to the upstream otherwise (before orgwarden, or with the key directly) is in no
workspace's record: it is not listed and answers 404 through the gateway. Every request is one
request of the ``files`` rate-limit group; nothing is metered (files carry no token usage). The
``anthropic-beta`` header is forwarded as sent, as for Messages.
"""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from orgwarden.domain.clock import rfc3339, utcnow
from orgwarden.gateway.exchange import Exchange
from orgwarden.gateway.forwarding import relay, request_body, send
from orgwarden.gateway.http1 import UpstreamError
from orgwarden.gateway.refusal import Refusal
from orgwarden.gateway.upstream import UpstreamResponse
from orgwarden.services.credentials import KeyGrant
from orgwarden.storage.files import StoredFiles
from orgwarden.storage.tables import StoredFile

if TYPE_CHECKING:
    from orgwarden.gateway.limits import Ticket
    from orgwarden.gateway.pipeline import Call, Gateway

log = logging.getLogger("orgwarden.gateway")

DEFAULT_MAX_FILE_BYTES = 500 * 1024 * 1024  # the API's own limit
MAX_UPLOAD_ANSWER = 1024 * 1024  # the upstream's answer to an upload is a small JSON object
_JSON = [(b"content-type", b"application/json")]


class FileHandler:
    """The ``files`` kind's handler (``Gateway.files``)."""

    def __init__(self, gateway: Gateway, files: StoredFiles, max_file_bytes: int) -> None:
        self.gateway = gateway
        self.files = files
        self.max_file_bytes = max_file_bytes

    async def handle(self, call: Call, exchange: Exchange, grant: KeyGrant) -> None:
        gateway = self.gateway
        ticket = None
        if gateway.limits is not None:
            ticket = await gateway.limits.admit_group("files", grant)
        name = call.route.name if call.route is not None else ""
        if name == "files.upload":
            await self._upload(call, exchange, grant, ticket)
        elif name == "files.list":
            await self._list(call, exchange, grant, ticket)
        else:
            await self._one(call, exchange, grant, ticket, name)

    async def _upload(self, call: Call, exchange: Exchange, grant: KeyGrant, ticket: Ticket | None) -> None:
        what = "the upload limit (max_file_bytes)"
        body = request_body(exchange, self.max_file_bytes, what)
        response = await send(self.gateway, call, exchange, grant, body, limit=self.max_file_bytes, what=what)
        try:
            if not 200 <= response.status < 300:
                await relay(self.gateway, call, response, exchange, grant, ticket)
                return
            answer = await _read_small(response)
            file = _stored(answer, grant)
            if file is None:
                log.warning("upstream answered an upload (%s) without a file id: not recorded", call.request_id)
            else:
                await self.files.add(file)
            call.status, call.responded = response.status, True
            headers = self.gateway.response_headers(response, grant, ticket, call.request_id)
            await exchange.respond(response.status, headers, answer)
        finally:
            await response.aclose()

    async def _one(self, call: Call, exchange: Exchange, grant: KeyGrant, ticket: Ticket | None, name: str) -> None:
        file_id = call.route.params[0] if call.route is not None and call.route.params else ""
        known = await self.files.get(file_id)
        if known is None or known.workspace_id != grant.workspace_id:
            raise Refusal(404, "not_found_error", f"file {file_id[:128]!r} not found in this API key's workspace")
        response = await send(self.gateway, call, exchange, grant, b"", limit=0, what="the limit")
        try:
            if name == "files.delete" and (200 <= response.status < 300 or response.status == 404):
                await self.files.remove(file_id)  # forgotten before the client hears it is gone
            await relay(self.gateway, call, response, exchange, grant, ticket)
        finally:
            await response.aclose()

    async def _list(self, call: Call, exchange: Exchange, grant: KeyGrant, ticket: Ticket | None) -> None:
        query = parse_qs(exchange.query.decode("latin-1"), keep_blank_values=True)
        limit = _limit(query)
        after = await self._cursor(query, "after_id", grant)
        before = await self._cursor(query, "before_id", grant)
        rows = await self.files.page(grant.workspace_id, limit, after=after, before=before)
        has_more = len(rows) > limit
        rows = rows[1:] if has_more and before is not None else rows[:limit]
        data = [metadata(row) for row in rows]
        page = {
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
        headers = list(_JSON)
        headers.append((b"anthropic-organization-id", grant.organization_id.encode()))
        headers.append((b"anthropic-workspace-id", grant.workspace_id.encode()))
        if ticket is not None:
            headers.extend(ticket.headers)
        headers.append((b"request-id", call.request_id.encode()))
        call.status, call.responded = 200, True
        await exchange.respond(200, headers, json.dumps(page).encode())

    async def _cursor(self, query: dict[str, list[str]], name: str, grant: KeyGrant) -> tuple[datetime, str] | None:
        values = query.get(name)
        if not values:
            return None
        row = await self.files.get(values[0])
        if row is None or row.workspace_id != grant.workspace_id:
            raise Refusal(400, "invalid_request_error", f"{name}: no file {values[0][:128]!r} in this workspace")
        return row.created_at, row.id


def _limit(query: dict[str, list[str]]) -> int:
    raw = query.get("limit", ["20"])[0]
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise Refusal(400, "invalid_request_error", "limit: must be an integer from 1 to 1000")
    return int(raw)


async def _read_small(response: UpstreamResponse) -> bytes:
    """The upstream's (small) answer to an upload, whole; a 502 if it is not small or is cut."""
    whole = response.arrived()
    if whole is not None:
        return whole
    pieces: list[bytes] = []
    size = 0
    try:
        async for piece in response:
            size += len(piece)
            if size > MAX_UPLOAD_ANSWER:
                raise Refusal(502, "api_error", "the upstream's answer to the upload was unexpectedly large")
            pieces.append(piece)
    except UpstreamError:
        raise Refusal(502, "api_error", "the upstream failed while answering the upload") from None
    return b"".join(pieces)


def _text(value: Any, limit: int, default: str = "") -> str:
    return value[:limit] if isinstance(value, str) else default


def _stored(answer: bytes, grant: KeyGrant) -> StoredFile | None:
    """The record of an uploaded file, from the upstream's answer (strings bounded), or ``None``."""
    try:
        meta = json.loads(answer)
    except ValueError:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("id"), str) or not 0 < len(meta["id"]) <= 128:
        return None
    size = meta.get("size_bytes")
    created = utcnow()
    raw_created = meta.get("created_at")
    if isinstance(raw_created, str):
        with contextlib.suppress(ValueError):  # not a time: the time it was recorded
            created = datetime.fromisoformat(raw_created.replace("Z", "+00:00")).astimezone(UTC)
    return StoredFile(
        id=meta["id"],
        organization_id=grant.organization_id,
        workspace_id=grant.workspace_id,
        api_key_id=grant.key_id,
        filename=_text(meta.get("filename"), 255),
        mime_type=_text(meta.get("mime_type"), 255, "application/octet-stream"),
        size_bytes=size if isinstance(size, int) and size >= 0 else 0,
        downloadable=meta.get("downloadable") is True,
        created_at=created,
    )


def metadata(row: StoredFile) -> dict[str, Any]:
    """A file as the API's ``FileMetadata``."""
    return {
        "id": row.id,
        "type": "file",
        "filename": row.filename,
        "mime_type": row.mime_type,
        "size_bytes": row.size_bytes,
        "created_at": rfc3339(row.created_at),
        "downloadable": row.downloadable,
    }
