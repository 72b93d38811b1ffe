"""The OTLP/HTTP receiver for Claude Code's telemetry: ``POST /v1/metrics`` and ``POST /v1/logs``.

A plain ASGI app, like the gateway, on the same port (``api.app`` dispatches the two paths here):

    method (405) -> tenant-restriction headers (400) -> API key (401/403, the gateway's key cache)
    -> tenant restriction (403, as on the data plane) -> Content-Type / Content-Encoding (415)
    -> body within ``max_request_bytes``, compressed and decompressed (413) -> decode (400) -> keep -> 200

Claude Code sends the key it was given in ``OTEL_EXPORTER_OTLP_HEADERS`` as ``x-api-key`` or
``Authorization: Bearer``; a revoked key is refused within a second, as on ``/v1/messages``.
Refusals are Anthropic's error envelope (JSON, whatever the request's encoding). Success is the
empty export response in the request's encoding, with ``partial_success`` when kept metrics had
points that could not be counted.

Metrics: the ``claude_code.*`` counters the usage report needs are added to the daily aggregates
(``services.claude_code``); other metrics are accepted and ignored. Logs (Claude Code's events) are
decoded, so a broken body is still a 400, and then dropped: every figure of the report also comes
as a metric, and counting both would count twice.
"""

from __future__ import annotations

import logging
import time

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Receive, Scope, Send

from orgwarden.domain.clock import utcnow
from orgwarden.gateway.exchange import AsgiExchange
from orgwarden.gateway.http1 import first_header
from orgwarden.gateway.keys import KeyCache
from orgwarden.gateway.pipeline import authenticate, caller_of, envelope, key_attempt, key_sender, read_body
from orgwarden.gateway.refusal import Refusal
from orgwarden.gateway.restriction import TenantGuard
from orgwarden.services.claude_code import ClaudeCodeService, Sender
from orgwarden.services.credentials import KeyGrant
from orgwarden.telemetry import otlp
from orgwarden.telemetry.points import extract, log_records

log = logging.getLogger("orgwarden.telemetry")

METRICS_PATH = "/v1/metrics"
LOGS_PATH = "/v1/logs"
PATHS = frozenset({METRICS_PATH, LOGS_PATH})
SURFACE = "the telemetry receiver"


def is_telemetry(path: str) -> bool:
    return path in PATHS


class TelemetryReceiver:
    def __init__(
        self, *, keys: KeyCache, claude_code: ClaudeCodeService, max_body: int, tenant: TenantGuard | None = None
    ) -> None:
        self.keys = keys
        self.tenant = tenant
        self.claude_code = claude_code
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id: str = scope["state"]["request_id"]
        try:
            if scope["method"] != "POST":
                message = f"method {scope['method']} is not allowed on {scope['path']}: send POST"
                raise Refusal(405, "invalid_request_error", message, headers=[(b"allow", b"POST")])
            grant = await self._authenticate(scope, request_id)
            encoding = otlp.negotiate(_header(scope, b"content-type"), _header(scope, b"content-encoding"))
            raw = await read_body(AsgiExchange(scope, receive, send), self.max_body)
            body = otlp.decompress(raw, encoding.compression, self.max_body)
            handle = self._metrics if scope["path"] == METRICS_PATH else self._logs
            answer = await handle(grant, body, encoding.content_type)
        except Refusal as refusal:
            await _respond(send, refusal.status, envelope(refusal, request_id), otlp.JSON, _headers(refusal))
        else:
            await _respond(send, 200, answer, encoding.content_type)

    async def _authenticate(self, scope: Scope, request_id: str) -> KeyGrant:
        """The request's API key, inside the data plane's tenant restriction (same rules and audit)."""
        headers = scope["headers"]
        if self.tenant is None:
            return await authenticate(self.keys, headers, SURFACE)
        client = scope.get("client")
        attempt = key_attempt(request_id, "POST", scope["path"], headers, client[0] if client else None)
        allowed = await self.tenant.allowed_org_ids(headers, attempt, lambda: key_sender(self.keys, headers))
        grant = await authenticate(self.keys, headers, SURFACE)
        await self.tenant.enforce(allowed, attempt, caller_of(grant))
        return grant

    async def _metrics(self, grant: KeyGrant, body: bytes, content_type: str) -> bytes:
        request = otlp.parse(body, content_type, ExportMetricsServiceRequest)
        # A user's tokens rotate hourly: their series are the user's, so a cumulative counter carries on.
        sender = grant.key_id or f"user:{grant.user_id}"
        found = extract(request, sender, time.time_ns())
        try:
            await self.claude_code.ingest(
                Sender(grant.organization_id, grant.key_id, grant.user_email), found.samples, utcnow()
            )
        except (SQLAlchemyError, OSError) as exc:
            # 503 is what OTLP exporters retry (with backoff): the export is kept, not lost.
            log.error("telemetry: cannot store an export from %s: %s", grant.key_id, exc)
            raise Refusal(503, "api_error", "cannot store telemetry right now (database unavailable); retry") from None
        response = ExportMetricsServiceResponse()
        if found.rejected:
            response.partial_success.rejected_data_points = found.rejected
            response.partial_success.error_message = "; ".join(found.problems)
        return otlp.serialize(response, content_type)

    async def _logs(self, grant: KeyGrant, body: bytes, content_type: str) -> bytes:
        request = otlp.parse(body, content_type, ExportLogsServiceRequest)
        log.debug("telemetry: %d log records from %s decoded and dropped", log_records(request), grant.key_id)
        return otlp.serialize(ExportLogsServiceResponse(), content_type)


def _header(scope: Scope, name: bytes) -> str | None:
    value = first_header(scope["headers"], name)
    return value.decode("latin-1") if value is not None else None


def _headers(refusal: Refusal) -> list[tuple[bytes, bytes]]:
    # OTLP exporters retry only 429, 502, 503 and 504; say so to other clients as well.
    retry = [(b"x-should-retry", b"false")] if 400 <= refusal.status < 500 else []
    return [*refusal.headers, *retry]


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    head = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
