"""Governed forwarding: every known endpoint that is neither Messages, Batches nor Files.

The pipeline has checked the key, the tenant restriction and ``anthropic-workspace-id`` already.
Here: one request of the endpoint's rate-limit group when it has one (Skills: ``skills``), the body
streamed to the upstream as it arrives (``StreamedBody``: never held whole, the client read only as
fast as the upstream takes it), with the workspace's own upstream key when it has one, the answer
streamed back as it comes, and one audit event for each state-changing call (any method but GET):
method, path, key, workspace and the status answered. Nothing is metered: these endpoints carry
no token usage (the ones that do, Messages and Batches, have their own code).

The helpers (``request_body``, ``send``, ``relay``, ``audit``) are the Files API's too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from orgwarden import ids
from orgwarden.domain.clock import utcnow
from orgwarden.gateway.exchange import BodyTooLarge, ClientGone, Exchange
from orgwarden.gateway.http1 import Broken, ConnectTimedOut, ReadTimedOut, StreamedBody, UpstreamError
from orgwarden.gateway.refusal import Refusal
from orgwarden.gateway.restriction import capped
from orgwarden.gateway.upstream import UpstreamResponse, forwarded_headers
from orgwarden.services.credentials import KeyGrant

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from orgwarden.gateway.limits import Ticket
    from orgwarden.gateway.pipeline import Call, Gateway

log = logging.getLogger("orgwarden.gateway")

ACTION = "gateway.request"  # the audit action of a state-changing call through the gateway


def _declared_length(exchange: Exchange) -> int | None:
    for name, value in exchange.headers:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


def _has_body(exchange: Exchange) -> bool:
    for name, value in exchange.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


def request_body(exchange: Exchange, limit: int, what: str) -> bytes | StreamedBody:
    """The request's body for the upstream: nothing when it has none, else its pieces as they come,
    refused with a 413 naming ``what`` (the limit) at once when its declared length passes it, else
    as soon as the bytes do (``BodyTooLarge``, turned into the 413 by ``send``)."""
    if not _has_body(exchange):
        return b""
    declared = _declared_length(exchange)
    if declared is not None and declared > limit:
        raise Refusal(413, "request_too_large", f"request body is larger than {what} of {limit} bytes")

    async def pieces() -> AsyncIterator[bytes]:
        size = 0
        async for piece in exchange.stream_body():
            size += len(piece)
            if size > limit:
                raise BodyTooLarge
            yield piece

    return StreamedBody(pieces(), declared)


def target_of(exchange: Exchange) -> str:
    """The upstream's request target, built from the path as received (still escaped: a ``%0D%0A``
    cannot break the request line; control characters were refused by the server)."""
    query = exchange.query
    return exchange.raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


async def send(
    gateway: Gateway, call: Call, exchange: Exchange, grant: KeyGrant, body: bytes | StreamedBody, *, limit: int,
    what: str, target: str | None = None,
) -> UpstreamResponse:  # fmt: skip
    """Forward the request (with the workspace's upstream key, if it has one) and return the
    upstream's answer, or the refusal: 413 past the limit, 400 when the client left mid-body,
    502/504 when the upstream failed."""
    upstream, upstream_key = gateway.upstreams.pick(grant.upstream_api_key)
    headers = forwarded_headers(exchange.headers)
    if gateway.identity is not None:
        headers = gateway.identity.apply(headers, grant)
    if upstream_key is not None:
        headers.append((b"x-api-key", upstream_key.encode()))
    try:
        return await upstream.request(call.method, target or target_of(exchange), headers, body)
    except BodyTooLarge:
        raise Refusal(413, "request_too_large", f"request body is larger than {what} of {limit} bytes") from None
    except ClientGone:
        raise Refusal(400, "invalid_request_error", "the client went away before sending the whole body") from None
    except (ConnectTimedOut, ReadTimedOut):
        raise Refusal(504, "timeout_error", "the upstream did not answer in time") from None
    except Broken as exc:
        log.warning("upstream failed before answering %s: %s", call.request_id, exc)
        raise Refusal(502, "api_error", "the upstream failed before answering") from None
    except UpstreamError as exc:
        log.warning("upstream unreachable for %s: %s", call.request_id, exc)
        raise Refusal(502, "api_error", "the upstream could not be reached") from None


async def relay(
    gateway: Gateway, call: Call, response: UpstreamResponse, exchange: Exchange, grant: KeyGrant,
    ticket: Ticket | None,
) -> None:  # fmt: skip
    """Send the upstream's answer on as it comes (a download is never held whole). An upstream that
    fails mid-answer leaves the client's answer unfinished: its connection is closed, so a cut file
    cannot pass for a whole one."""
    headers = gateway.response_headers(response, grant, ticket, call.request_id)
    call.status = response.status
    whole = response.arrived()
    call.responded = True
    if whole is not None:
        await exchange.respond(response.status, headers, whole)
        return
    await exchange.start(response.status, headers)
    try:
        async for piece in response:
            await exchange.send(piece)
    except UpstreamError as exc:
        log.warning("upstream failed mid-answer for %s: %s", call.request_id, exc)
        call.status = 502
        raise Unfinished from None
    await exchange.finish()


class Unfinished(Exception):
    """An answer that was started could not be finished: the server closes the connection."""


def audit(gateway: Gateway, call: Call, exchange: Exchange, grant: KeyGrant, status: int) -> None:
    """Queue the audit event of a state-changing call (not waited for: the recorder's queue)."""
    details: dict[str, Any] = {"method": call.method[:16], "path": capped(call.path), "status": status}
    if call.route is not None:
        details["endpoint"] = call.route.name
    event = {
        "id": ids.new_id(ids.AUDIT_EVENT),
        "organization_id": grant.organization_id,
        "occurred_at": utcnow(),
        "actor_type": "user_access_token" if grant.user_id is not None else "api_key",
        "actor_id": (grant.token_id or "") if grant.user_id is not None else grant.key_id,
        "actor_user_id": grant.user_id,
        "action": ACTION,
        "target_type": "endpoint",
        "target_id": call.route.name if call.route is not None else call.path[:64],
        "workspace_id": grant.workspace_id,
        "request_id": call.request_id,
        "source_ip": exchange.client_host(),
        "outcome": "success" if 200 <= status < 400 else "failure",
        "details": details,
    }
    if not gateway.recorder.offer("audit", event):
        log.warning("audit queue full: the event of %s %s was not recorded", call.method, call.request_id)


class Forwarder:
    """The ``forward`` kind's handler (``Gateway.forwarding``)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def handle(self, call: Call, exchange: Exchange, grant: KeyGrant) -> None:
        gateway = self.gateway
        status = 500
        try:
            ticket = None
            group = call.route.group if call.route is not None else None
            if group is not None and gateway.limits is not None:
                ticket = await gateway.limits.admit_group(group, grant)
            body = request_body(exchange, gateway.max_body, "the limit")
            response = await send(gateway, call, exchange, grant, body, limit=gateway.max_body, what="the limit")
            try:
                await relay(gateway, call, response, exchange, grant, ticket)
            finally:
                await response.aclose()
            status = call.status
        except Refusal as refusal:
            status = refusal.status
            raise
        except Unfinished:
            status = 502
            raise
        finally:
            if call.method != "GET":
                audit(gateway, call, exchange, grant, status)
