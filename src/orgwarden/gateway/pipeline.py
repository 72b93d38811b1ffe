"""The data-plane pipeline: ``Gateway.serve`` one ``Exchange`` (no framework on the hot path).

    headers (tenant-restriction syntax, 400) -> authenticate (401/403) -> restrict (403)
    -> workspace header (403) -> body and data residency (400/413) -> forward -> relay -> meter

Each step either refuses with the Anthropic error envelope or passes on. A request the upstream
refused before generating anything (a 4xx without usage) leaves no usage record. The usage record is
offered to the recorder before the response completes (after the last chunk of a stream has been
metered, before a JSON answer is sent; at once when the client leaves), so that a record exists
for every answer a client got.

The request body is forwarded as the client sent it, byte for byte, with one documented exception:
when a Messages request names no ``inference_geo`` and its workspace's default is not ``global``,
the default is inserted so that the workspace's data-residency setting holds. A body that names
``inference_geo`` twice, or names it ``null`` in a workspace that requires a geo, is refused (400):
what the upstream would read could differ from what was checked. Responses (status, headers, body)
come back as the upstream sent them, SSE relayed chunk by chunk; orgwarden adds ``request-id``,
``anthropic-organization-id`` and ``anthropic-workspace-id`` (the upstream's own request id is kept
as ``upstream-request-id``).

``orgwarden serve`` hands the pipeline its requests straight from its HTTP server
(``server/direct.py``); ``Gateway`` is also a plain ASGI app (``AsgiExchange``) for any other
server and for the requests the fast path leaves to ASGI.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from orgwarden import ids
from orgwarden.domain import tenant
from orgwarden.domain.bounded import BoundedMemo, BoundedSet
from orgwarden.domain.catalog import Catalog
from orgwarden.domain.cc_policy import EffectivePolicy
from orgwarden.domain.clock import rfc3339, utcnow
from orgwarden.domain.jsonload import TOO_DEEP, NestedTooDeeply, loads
from orgwarden.domain.pricing import Cost, TokenUsage, cost_of
from orgwarden.domain.rollups import Entry, report_geo
from orgwarden.domain.statuses import api_key_status
from orgwarden.domain.tokens import estimate_request
from orgwarden.domain.usage import Extracted, StreamMeter, from_message, from_partial
from orgwarden.gateway import model_access
from orgwarden.gateway.endpoints import BatchHandler, Endpoint, classify, unknown
from orgwarden.gateway.exchange import AsgiExchange, BodyTooLarge, ClientGone, Exchange, Headers
from orgwarden.gateway.forwarding import Unfinished
from orgwarden.gateway.http1 import Broken, ConnectTimedOut, ReadTimedOut, UpstreamError
from orgwarden.gateway.identity import UpstreamIdentity
from orgwarden.gateway.keys import KeyCache
from orgwarden.gateway.limits import Enforcer, Ticket
from orgwarden.gateway.recorder import Recorder
from orgwarden.gateway.refusal import Refusal
from orgwarden.gateway.residency import resolve_geo
from orgwarden.gateway.restriction import Attempt, Caller, TenantGuard
from orgwarden.gateway.upstream import UpstreamResponse, Upstreams, forwarded_headers
from orgwarden.gateway.user_tokens import user_token_grant
from orgwarden.observability.access import GatewayObserver
from orgwarden.services.credentials import AdminKeyPresented, KeyGrant
from orgwarden.storage.failures import STORAGE_UNAVAILABLE, describe, is_unavailable

log = logging.getLogger("orgwarden.gateway")

UNPRICED_NAMES = 1024  # unknown model names remembered (each is warned about once)
NO_COST = Cost(0, 0, 0, 0, 0, 0)
_NO_USAGE = TokenUsage()
# Not relayed: hop-by-hop headers, and the upstream's framing (the exchange frames what it sends).
_NOT_RELAYED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-connection",
        b"content-length",
    }
)


def route_of(method: str, path: str) -> str | None:
    """The data-plane endpoint's name a request is for, or ``None`` (no such endpoint)."""
    endpoint = classify(method, path)
    return endpoint.name if endpoint is not None else None


@dataclass(slots=True)
class Call:
    """What the pipeline has learned about one request."""

    request_id: str
    method: str
    path: str
    endpoint: str
    started: float
    responded: bool = False  # the response has started: a failure can no longer change its status
    grant: KeyGrant | None = None
    body: bytes = b""
    stream: bool = False
    model: str = ""
    inference_geo: str | None = None
    service_tier: str | None = None
    speed: str | None = None
    ticket: Ticket | None = None
    status: int = 0  # of the answer given (499: the client left first), for the access log and metrics
    extracted: Extracted | None = None  # what metering read from the answer
    request: dict[str, Any] | None = None  # the parsed Messages request
    max_tokens: int | None = None
    metered: bool = False  # the usage record has been queued
    route: Endpoint | None = None  # the endpoint's table row: kind, rate-limit group, path parameters
    model_policy: EffectivePolicy | None = None  # the caller's Claude Code policy, when it restricts models
    session_id: str | None = None  # Claude Code's x-claude-code-session-id (cut at the recorder's gate)
    agent_id: str | None = None  # and x-claude-code-agent-id, on a subagent's calls


def _header(headers: Headers, name: bytes) -> str | None:
    """The first value of a request header. Request header names are in lower case already (ASGI's
    rule; the direct path gets them from orgwarden's server, which lowers them), so none is lowered
    again here, unlike ``first_header`` for the upstream's answers."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


_SESSION_HEADER = b"x-claude-code-session-id"
_AGENT_HEADER = b"x-claude-code-agent-id"


def _claude_code_ids(call: Call, headers: Headers) -> None:
    """Claude Code's session and agent ids, in one pass over the request's headers."""
    for key, value in headers:
        if key == _SESSION_HEADER:
            call.session_id = value[:256].decode("latin-1")
        elif key == _AGENT_HEADER:
            call.agent_id = value[:256].decode("latin-1")


def _credential(headers: Headers) -> str | None:
    key = _header(headers, b"x-api-key")
    if key:
        return key.strip()
    auth = _header(headers, b"authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def envelope(refusal: Refusal, request_id: str) -> bytes:
    error: dict[str, Any] = {"type": refusal.kind, "message": refusal.message, **refusal.extra}
    if refusal.code is not None:
        error["details"] = {"error_code": refusal.code}
    return json.dumps({"type": "error", "error": error, "request_id": request_id}).encode()


async def authenticate(keys: KeyCache, headers: Headers, surface: str) -> KeyGrant:
    """The active API key a request presents (through the key cache: no database round trip once
    seen; a revocation is seen within a second), or a 401/403 refusal naming ``surface``."""
    secret = _credential(headers)
    if secret is None:
        raise Refusal(
            401,
            "authentication_error",
            "missing credentials: send your API key as x-api-key or Authorization: Bearer",
        )
    answer = await keys.lookup(secret)
    if secret.startswith(ids.USER_ACCESS_TOKEN_PREFIX):  # a user's access token: gateway/user_tokens.py
        return user_token_grant(answer, surface)
    if isinstance(answer, AdminKeyPresented):
        raise Refusal(403, "permission_error", f"admin API keys cannot call {surface}; use an API key")
    if not isinstance(answer, KeyGrant):  # None (a UserTokenRefused comes only for a user token)
        raise Refusal(401, "authentication_error", "invalid x-api-key")
    status = answer.status if answer.expires_at is None else api_key_status(answer.status, answer.expires_at, utcnow())
    if status == "expired":
        raise Refusal(401, "authentication_error", f"this API key expired at {rfc3339(answer.expires_at)}")
    if status != "active" or answer.workspace_archived:
        raise Refusal(401, "authentication_error", f"this API key is {status}")
    return answer


async def key_sender(keys: KeyCache, headers: Headers) -> Caller | None:
    """Who a request's API key belongs to, if it is a known one (for an audit event; no refusal)."""
    secret = _credential(headers)
    try:
        known = await keys.lookup(secret) if secret else None
    except Refusal:  # the database is unreachable: audited without the sender
        return None
    return caller_of(known) if isinstance(known, KeyGrant) else None


def caller_of(grant: KeyGrant) -> Caller:
    """An API key as the tenant restriction sees it."""
    if grant.user_id is not None:  # a user's access token
        return Caller(
            grant.organization_id, "user_access_token", grant.token_id or "", grant.user_id, grant.workspace_id
        )
    return Caller(grant.organization_id, "api_key", grant.key_id, None, grant.workspace_id)


def key_attempt(request_id: str, method: str, path: str, headers: Headers, client: str | None) -> Attempt:
    """A request authenticated by an API key, as the tenant restriction's audit event records it."""
    return Attempt(request_id, method, path, client, "api_key" if _credential(headers) else "none")


async def read_body(exchange: Exchange, limit: int) -> bytes:
    """The whole request body, or a 413 (at once when Content-Length says so, else as soon as the
    body passes ``limit``) or a 400 when the client leaves before sending all of it."""
    too_large = f"request body is larger than the limit of {limit} bytes"
    declared = _header(exchange.headers, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refusal(413, "request_too_large", too_large)
    try:
        return await exchange.read_body(limit)
    except BodyTooLarge:
        raise Refusal(413, "request_too_large", too_large) from None
    except ClientGone:
        raise Refusal(400, "invalid_request_error", "the client went away before sending the whole body") from None


class Gateway:
    def __init__(
        self,
        *,
        keys: KeyCache,
        upstreams: Upstreams,
        recorder: Recorder,
        catalog: Catalog,
        max_body: int,
        organization_id: Callable[[], str | None],
        limits: Enforcer | None = None,
        observer: GatewayObserver | None = None,
        identity: UpstreamIdentity | None = None,
    ) -> None:
        self.keys = keys
        self.upstreams = upstreams
        self.recorder = recorder
        self.catalog = catalog
        self.max_body = max_body
        self.organization_id = organization_id
        self.limits = limits
        self.observer = observer or GatewayObserver(None)
        self.identity = identity  # the opt-in identity header for an upstream proxy (gateway.identity)
        self.tenant = TenantGuard(lambda event: recorder.put("audit", event), organization_id)
        self.batches: BatchHandler | None = None  # Message Batches (set in api/app.py)
        self.files: KindHandler | None = None  # the Files API (set in api/app.py)
        self.forwarding: KindHandler | None = None  # every other known endpoint (set in api/app.py)
        self.model_access: model_access.ModelAccess | None = None  # policies' model lists (api/app.py)
        self._unpriced = BoundedSet(UNPRICED_NAMES)

    @property
    def audit_suppressed(self) -> int:
        """Keyless refusals not audited (over the tenant guard's rate) since start."""
        return self.tenant.suppressed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The gateway as an ASGI app."""
        await self.serve(AsgiExchange(scope, receive, send))

    async def serve(self, exchange: Exchange) -> None:
        """Answer one data-plane request: always an answer, never an exception."""
        raw_path = exchange.raw_path
        raw = raw_path.decode("latin-1") if b"%" in raw_path else None  # never on the direct path
        endpoint = classify(exchange.method, exchange.path, raw)
        call = Call(
            request_id=ids.new_request_id(),
            method=exchange.method,
            path=exchange.path,
            endpoint=endpoint.name if endpoint is not None else "",
            started=time.perf_counter(),
            route=endpoint,
        )
        try:
            if endpoint is None:  # a path the API does not have, or another method, e.g. GET /v1/messages
                raise Refusal(404, "not_found_error", unknown(call.method, call.path))
            await self._handle(call, exchange, endpoint)
        except Refusal as refusal:
            await self._refuse(exchange, call, refusal)
        except Unfinished:  # logged where it happened; the server closes the connection
            pass
        except Exception as exc:
            if is_unavailable(exc):  # the database, for a handler that needs it (batches, files): 503
                log.warning("storage unavailable for %s %s (%s): %s", call.method, call.path, call.request_id,
                            describe(exc))  # fmt: skip
                if not call.responded:
                    unavailable = Refusal(503, "api_error", STORAGE_UNAVAILABLE, headers=[(b"retry-after", b"5")])
                    await self._refuse(exchange, call, unavailable)
                return
            # A bug: logged once with the request id, answered without details.
            log.error("unhandled error in %s %s (%s)", call.method, call.path, call.request_id, exc_info=exc)
            if not call.responded:
                internal = Refusal(500, "api_error", "an internal error occurred; it has been logged")
                await self._refuse(exchange, call, internal)
        finally:
            self.observer.answered(call, exchange)  # the access log line and request metrics

    # -- the steps -------------------------------------------------------------------------------

    async def _handle(self, call: Call, exchange: Exchange, endpoint: Endpoint) -> None:
        headers = exchange.headers
        try:
            allowed = tenant.parse_allowed_org_ids(headers)
        except tenant.TenantHeaderError as exc:
            # The 400 stands whatever the key; who sent it is looked up only for the audit trail.
            await self.tenant.malformed(_attempt(call, exchange), await key_sender(self.keys, headers), exc)
        kind = endpoint.kind
        grant = await authenticate(self.keys, headers, _SURFACES.get(kind, "the API"))
        call.grant = grant
        if not tenant.is_allowed(grant.organization_id, allowed):
            await self.tenant.deny(allowed, _attempt(call, exchange), caller_of(grant))
        wanted = _header(headers, b"anthropic-workspace-id")
        if wanted is not None and wanted != grant.workspace_id:
            raise Refusal(
                403,
                "permission_error",
                f"anthropic-workspace-id {wanted[:100]!r} does not match this API key's workspace",
            )
        if self.model_access is not None and kind != "files" and kind != "forward":
            call.model_policy = await self.model_access.policy(grant)  # a cached look-up
        if kind == "batches" or kind == "files" or kind == "forward":
            await self._other(call, exchange, grant, kind)
            return
        request: dict[str, Any] | None = None
        _claude_code_ids(call, headers)
        if call.method == "POST":
            call.body = await read_body(exchange, self.max_body)
            if call.endpoint == "messages":
                request = self._inspect_messages(call, grant)
                model_access.check(call.model_policy, call.model)
            elif call.model_policy is not None:  # count_tokens
                model_access.check_body(call.model_policy, call.body)
        elif call.endpoint == "model":
            model_access.check_model_path(call.model_policy, call.path)
        if self.limits is not None and call.endpoint in ("messages", "count_tokens"):
            call.ticket = await self.limits.admit(call.endpoint, grant, call.body, request)
        try:
            await self._forward(call, exchange, grant)
        finally:
            if call.ticket is not None:  # not metered (the upstream was never reached): give it all back
                ticket, call.ticket = call.ticket, None
                if self.limits is not None:
                    self.limits.settle(ticket, Extracted(), 0)

    async def _other(self, call: Call, exchange: Exchange, grant: KeyGrant, kind: str) -> None:
        """Hand a request that is not for the Messages code path to its kind's handler."""
        handler: BatchHandler | KindHandler | None = (
            self.batches if kind == "batches" else self.files if kind == "files" else self.forwarding
        )
        if handler is None:
            raise Refusal(404, "not_found_error", f"{call.method} {call.path[:200]} is not served by this gateway")
        await handler.handle(call, exchange, grant)

    def _inspect_messages(self, call: Call, grant: KeyGrant) -> dict[str, Any]:
        """Read what metering and residency need; insert the workspace's default geo if none is named."""
        try:
            request = loads(call.body)
        except NestedTooDeeply:
            raise Refusal(400, "invalid_request_error", TOO_DEEP) from None
        except ValueError:
            raise Refusal(400, "invalid_request_error", "request body is not valid JSON") from None
        if not isinstance(request, dict):
            raise Refusal(400, "invalid_request_error", "request body must be a JSON object")
        model = request.get("model")
        if not isinstance(model, str) or not model:
            raise Refusal(400, "invalid_request_error", "model: field required")
        call.model = model
        call.request = request
        max_tokens = request.get("max_tokens")
        call.max_tokens = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None
        call.stream = request.get("stream") is True
        tier, speed = request.get("service_tier"), request.get("speed")
        call.service_tier = tier if isinstance(tier, str) else None
        call.speed = speed if isinstance(speed, str) else None
        if "inference_geo" in request:
            _check_geo_named_once(call.body, grant.workspace_id)
        geo, insert = resolve_geo(request, grant)
        if insert:
            call.body = _insert_field(call.body, "inference_geo", geo)
        call.inference_geo = geo
        if self.limits is not None and geo is not None and request.get("inference_geo") is None:
            request["inference_geo"] = geo  # priced as the upstream will see it
        return request

    # -- forwarding and relaying -----------------------------------------------------------------

    async def _forward(self, call: Call, exchange: Exchange, grant: KeyGrant) -> None:
        upstream, upstream_key = self.upstreams.pick(grant.upstream_api_key)
        headers = forwarded_headers(exchange.headers)
        if self.identity is not None:
            headers = self.identity.apply(headers, grant)
        if upstream_key is not None:
            headers.append((b"x-api-key", upstream_key.encode()))
        query = exchange.query  # the raw path, still escaped: a %0D%0A cannot break the request line
        target = exchange.raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        sent = time.perf_counter()
        try:
            response = await upstream.request(call.method, target, headers, call.body)
        except ConnectTimedOut:
            raise Refusal(504, "timeout_error", "the upstream did not accept the connection in time") from None
        except ReadTimedOut:
            await self._meter(call, 504, Extracted())
            raise Refusal(504, "timeout_error", "the upstream did not answer in time") from None
        except Broken as exc:  # sent, then no answer: never sent again (it may have run upstream)
            log.warning("upstream failed before answering %s: %s", call.request_id, exc)
            raise Refusal(502, "api_error", "the upstream failed before answering") from None
        except UpstreamError as exc:
            log.warning("upstream unreachable for %s: %s", call.request_id, exc)
            raise Refusal(502, "api_error", "the upstream could not be reached") from None
        self.observer.upstream(call, time.perf_counter() - sent)
        try:
            await self._relay(call, response, exchange, grant)
        finally:
            await response.aclose()

    def response_headers(
        self, response: UpstreamResponse, grant: KeyGrant, ticket: Ticket | None, request_id: str
    ) -> list[tuple[bytes, bytes]]:
        names = _relayed_names
        headers: list[tuple[bytes, bytes]] = []
        for name, value in response.headers:
            relayed = names.get(name)
            if relayed is None:
                relayed = _learn_relayed_name(name)
            if relayed:
                headers.append((relayed, value))
        headers.append((b"anthropic-organization-id", grant.organization_id.encode()))
        headers.append((b"anthropic-workspace-id", grant.workspace_id.encode()))
        if ticket is not None:
            headers.extend(ticket.headers)
        headers.append((b"request-id", request_id.encode()))
        return headers

    async def _relay(self, call: Call, response: UpstreamResponse, exchange: Exchange, grant: KeyGrant) -> None:
        if not (response.header(b"content-type") or b"").startswith(b"text/event-stream"):
            await self._relay_whole(call, response, exchange, grant)
            return
        meter = StreamMeter()
        call.responded = True
        await exchange.start(response.status, self.response_headers(response, grant, call.ticket, call.request_id))

        async def pump() -> None:
            # Metered before the end goes out (after the last chunk was fed to the meter), so the
            # record is queued before the client has its whole answer.
            last = b""
            try:
                async for chunk in response:
                    meter.feed(chunk)
                    if response.done:  # the rest has arrived: this piece leaves with the end
                        last = chunk
                    else:
                        await exchange.send(chunk)
            except UpstreamError as exc:
                log.warning("upstream failed mid-response for %s: %s", call.request_id, exc)
                status, kind = _failed(exc)
                await self._meter(call, status, self._stream_usage(call, meter, response.status))
                error = {"type": "error", "error": {"type": kind, "message": "the upstream stream was interrupted"},
                         "request_id": call.request_id}  # fmt: skip
                await exchange.send(f"event: error\ndata: {json.dumps(error)}\n\n".encode())
            else:
                await self._meter(call, response.status, self._stream_usage(call, meter, response.status))
            await exchange.finish(last)

        aborted = await exchange.until_disconnect(pump())
        if not call.metered:  # the client left first: metered with what had arrived
            usage = self._stream_usage(call, meter, response.status)
            await self._meter(call, 499 if aborted else response.status, usage)

    def _stream_usage(self, call: Call, meter: StreamMeter, status: int) -> Extracted:
        """The stream's usage; estimated from its content when its final usage never came."""
        if meter.final or not 200 <= status < 300:
            return meter.result
        return meter.settled(call.max_tokens, None if meter.started else self._input_estimate(call))

    @staticmethod
    def _input_estimate(call: Call) -> int | None:
        """The request's input tokens as estimated before forwarding, for an answer whose own count
        never came (a cut JSON body; a stream without ``message_start``)."""
        return estimate_request(call.request) if call.request is not None else None

    async def _relay_whole(self, call: Call, response: UpstreamResponse, exchange: Exchange, grant: KeyGrant) -> None:
        """A response that is not a stream is read to its end before the client gets any of it.

        Such an answer arrives all at once (the upstream sends its head when the message is done),
        so nothing is gained by relaying it piecemeal, and reading it first means an upstream that
        fails half-way through it gets the client a proper 502/504 envelope instead of a truncated
        body. The client's disconnecting is not watched here (only streams are long enough for it
        to matter): such a request is metered with the upstream's status, as it was answered."""
        body = response.arrived()
        if body is None:
            chunks: list[bytes] = []
            try:
                async for chunk in response:
                    chunks.append(chunk)
            except UpstreamError as exc:
                log.warning("upstream failed mid-response for %s: %s", call.request_id, exc)
                status, kind = _failed(exc)
                received = Extracted()
                if call.endpoint == "messages" and 200 <= response.status < 300:  # a Message, cut
                    received = from_partial(b"".join(chunks), call.max_tokens, self._input_estimate(call))
                await self._meter(call, status, received)
                raise Refusal(status, kind, "the upstream failed while sending its answer") from None
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        call.responded = True
        headers = self.response_headers(response, grant, call.ticket, call.request_id)
        if call.endpoint == "models" and call.model_policy is not None and 200 <= response.status < 300:
            body = model_access.filter_list(call.model_policy, body)
        extracted = from_message(body)
        if not extracted.completed and call.endpoint == "messages" and 200 <= response.status < 300:
            extracted = from_partial(body, call.max_tokens, self._input_estimate(call))  # not a whole Message
        await self._meter(call, response.status, extracted)  # queued before the answer leaves
        await exchange.respond(response.status, headers, body)

    # -- metering and auditing -------------------------------------------------------------------

    async def _meter(self, call: Call, status: int, extracted: Extracted) -> None:
        call.status, call.extracted = status, extracted
        grant = call.grant
        if grant is None:
            return
        usage = extracted.usage
        if 400 <= status < 499 and usage == _NO_USAGE and not extracted.completed:
            # Refused by the upstream before it generated anything (an unknown model, a bad
            # request, its own rate limit): no usage to record, and no price to look for. The
            # access log and metrics still have it; what the request reserved goes back.
            call.metered = True
            if call.ticket is not None and self.limits is not None:
                ticket, call.ticket = call.ticket, None
                self.limits.settle(ticket, extracted, 0)
            return
        model_name = extracted.model or call.model
        model = self.catalog.find(model_name) if model_name else None
        geo = extracted.inference_geo or call.inference_geo or "global"
        parts = NO_COST
        if model is not None:
            parts = cost_of(self.catalog, model, usage, inference_geo=geo)
        elif model_name and call.endpoint == "messages" and self._unpriced.add(model_name):
            log.warning(
                "no price for model %r: its usage is recorded with cost 0 (add it to the models file)", model_name
            )
        cost = parts.total
        record: dict[str, Any] = {  # a literal: a dict(...) call of 22 keywords costs as much again
            "id": call.request_id,
            "organization_id": grant.organization_id,
            "workspace_id": grant.workspace_id,
            "api_key_id": grant.key_id,
            "model": model.id if model else model_name,
            "service_tier": extracted.service_tier or "standard",
            "inference_geo": geo,
            "context_window": usage.context_window,
            "speed": extracted.speed or call.speed or "standard",
            "endpoint": call.endpoint,
            "stream": call.stream,
            "completed": extracted.completed,
            "usage_estimated": extracted.estimated,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_5m_tokens": usage.cache_creation_5m,
            "cache_creation_1h_tokens": usage.cache_creation_1h,
            "cache_read_tokens": usage.cache_read,
            "web_search_requests": usage.web_search_requests,
            "cost_picodollars": cost,
            "status": status,
            "latency_ms": int((time.perf_counter() - call.started) * 1000),
            "created_at": utcnow(),
            "user_id": grant.user_id,  # a user access token's user ("api_key_id" is then "")
            "claude_code_session_id": call.session_id,
            "claude_code_agent_id": call.agent_id,
        }
        rollup = None
        if call.endpoint == "messages":
            rollup = Entry(record, parts, report_geo(model, geo))
        if not self.recorder.offer("usage", record, rollup):
            await self.recorder.put("usage", record, rollup)  # full: wait for room
        call.metered = True
        if call.ticket is not None and self.limits is not None:
            ticket, call.ticket = call.ticket, None
            self.limits.settle(ticket, extracted, cost)

    async def _refuse(self, exchange: Exchange, call: Call, refusal: Refusal) -> None:
        call.status = refusal.status
        body = envelope(refusal, call.request_id)
        headers = [(b"content-type", b"application/json")]
        if call.grant is not None:
            headers.append((b"anthropic-organization-id", call.grant.organization_id.encode()))
            headers.append((b"anthropic-workspace-id", call.grant.workspace_id.encode()))
        elif (installation := self.organization_id()) is not None:
            headers.append((b"anthropic-organization-id", installation.encode()))
        if refusal.status in (401, 403, 400, 413):
            headers.append((b"x-should-retry", b"false"))
        headers.extend(refusal.headers)
        headers.append((b"request-id", call.request_id.encode()))
        call.responded = True
        await exchange.respond(refusal.status, headers, body)


class KindHandler(Protocol):
    """The Files API and governed forwarding: the same interface as ``BatchHandler``."""

    async def handle(self, call: Call, exchange: Exchange, grant: KeyGrant) -> None: ...


_SURFACES = {
    "messages": "the Messages API",
    "count_tokens": "the Messages API",
    "models": "the Messages API",
    "batches": "the Message Batches API",
    "files": "the Files API",
}

# What ``_response_headers`` does with each header name the upstream has sent: the name the client
# gets it under (lower case; the upstream's ``request-id`` becomes ``upstream-request-id``), or b""
# to leave it out. An upstream sends the same few names every time, so each is decided once; bounded
# all the same.
_relayed_names: BoundedMemo[bytes, bytes] = BoundedMemo(1024)


def _learn_relayed_name(name: bytes) -> bytes:
    lower = name.lower()
    if lower in _NOT_RELAYED or lower in (b"anthropic-organization-id", b"anthropic-workspace-id"):
        relayed = b""  # orgwarden's own take their place
    elif lower == b"request-id":
        relayed = b"upstream-request-id"
    else:
        relayed = lower
    return _relayed_names.remember(name, relayed)


_GEO_KEY = b'"inference_geo"'
# A \u escape of a character of "inference_geo" (c e f g i n o r _), which could spell the key
# another way; escapes of other characters (non-ASCII text, <>&) cannot.
_GEO_KEY_ESCAPE = re.compile(rb"\\u00(?:5[fF]|6[35679eEfF]|72)")


def _check_geo_named_once(body: bytes, workspace_id: str) -> None:
    """Refuse a body whose top-level object names ``inference_geo`` more than once (the parsers keep
    the last; another could keep the first). Only a body that spells the key twice, or escapes one
    of its characters (``inference\\u005fgeo``), is parsed again to look: every other one names it
    once, and is spared a second parse."""
    if body.count(_GEO_KEY) <= 1 and _GEO_KEY_ESCAPE.search(body) is None:
        return
    outermost: list[list[tuple[str, Any]]] = []

    def keep(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        outermost[:] = [pairs]  # the outermost object is the last one completed
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=keep)
    except RecursionError:
        raise Refusal(400, "invalid_request_error", TOO_DEEP) from None
    if outermost and sum(1 for key, _ in outermost[0] if key == "inference_geo") > 1:
        raise Refusal(
            400,
            "invalid_request_error",
            f"inference_geo: named more than once in the request body (workspace {workspace_id} enforces it);"
            " name it once",
        )


def _attempt(call: Call, exchange: Exchange) -> Attempt:
    return key_attempt(call.request_id, call.method, call.path, exchange.headers, exchange.client_host())


def _failed(exc: UpstreamError) -> tuple[int, str]:
    """Status and error type for an upstream that failed after answering began: stalled or broken."""
    return (504, "timeout_error") if isinstance(exc, ReadTimedOut) else (502, "api_error")


def _insert_field(body: bytes, name: str, value: str) -> bytes:
    """Insert ``"name": value`` right after the opening brace, leaving every other byte as it was."""
    start = body.index(b"{") + 1
    rest = body[start:].lstrip()
    separator = b"" if rest.startswith(b"}") else b","
    return body[:start] + json.dumps({name: value})[1:-1].encode() + separator + body[start:]
