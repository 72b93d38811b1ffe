"""Message Batches through the gateway: governed like messages, metered once per result.

    POST   /v1/messages/batches               create   (body read, checked, priced, admitted)
    GET    /v1/messages/batches               list     (the key's workspace's batches only)
    GET    /v1/messages/batches/{id}          retrieve
    POST   /v1/messages/batches/{id}/cancel   cancel
    DELETE /v1/messages/batches/{id}          delete   (metered first, if it was not)
    GET    /v1/messages/batches/{id}/results  results  (JSONL, streamed and metered as it passes)

The pipeline has authenticated the key, applied the tenant restriction and checked the workspace
header when ``BatchHandler.handle`` is called. Every call is one request of the ``batch`` rate-limit
group (``Enforcer.admit_batch``). A create is read whole (up to ``batch_max_body_bytes``), each
``requests[i].params`` checked like a Messages request (model, ``max_tokens``, the workspace's data
residency: a geo named, refused or inserted as ``pipeline._inspect_messages`` does; the body the
upstream gets is the checked one, serialized again), and the worst case of all its requests at batch
prices reserved against the spend limits. That reservation is held until the batch is metered; its
amount and counters are kept in the batch's row (``tables.MessageBatch``), so a restart settles it
right, and a limits store that starts a counter again counts it (``LimitSource.baseline``).

Metering happens once per batch, whichever comes first: its results are read through orgwarden, or
the background poll (every ``batch_poll_interval_seconds``, on each instance) sees it ended. The
instance that wins the claim (``MessageBatches.claim``, a conditional UPDATE) meters every
``succeeded`` result as one usage record (service tier ``batch``, endpoint ``batch``, batch prices,
dated at the batch's creation, like its reservation), with an id derived from the batch id and the
``custom_id``, so a replay or a second metering after a claim holder died (its lease passed) adds
nothing twice; then replaces the reservation by the metered cost. Errored, canceled and expired
results used nothing and leave no record.

A batch is visible only to keys of the workspace that created it (else 404), and the batch objects
returned carry a ``results_url`` pointing at orgwarden (``public_url``, else the request's Host), so
the SDK's ``results()`` comes back here. A workspace with its own upstream key sends every batch call
with it. Create, cancel and delete are audit events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orgwarden import ids
from orgwarden.crypto import SecretBox
from orgwarden.domain.cc_policy import EffectivePolicy
from orgwarden.domain.clock import utcnow
from orgwarden.domain.jsonload import TOO_DEEP, NestedTooDeeply, loads
from orgwarden.domain.pricing import Cost, cost_of
from orgwarden.domain.rollups import Entry, report_geo
from orgwarden.domain.usage import from_message
from orgwarden.gateway import model_access
from orgwarden.gateway.exchange import Exchange
from orgwarden.gateway.http1 import Broken, ConnectTimedOut, ReadTimedOut, UpstreamError
from orgwarden.gateway.limits import Ticket
from orgwarden.gateway.pipeline import Call, Gateway, caller_of, read_body
from orgwarden.gateway.refusal import Refusal
from orgwarden.gateway.residency import resolve_geo
from orgwarden.gateway.upstream import UpstreamResponse, forwarded_headers
from orgwarden.services.credentials import KeyGrant
from orgwarden.storage.batches import MessageBatches
from orgwarden.storage.tables import MessageBatch

log = logging.getLogger("orgwarden.gateway")

CLAIM_LEASE = timedelta(minutes=10)  # a claim older than this, never settled, may be taken again
POLL_BATCHES = 100  # unsettled batches looked at per poll
LIST_FETCHES = 8  # batches retrieved from the upstream at once for a list
MAX_LIST = 100
_PATH = re.compile(r"^/v1/messages/batches(?:/([A-Za-z0-9_-]{1,64})(?:/(cancel|results))?)?$")
_HOST = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,255}$")
_JSON = (b"content-type", b"application/json")
_NO_COST = Cost(0, 0, 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Metered:
    """What metering a batch's results came to."""

    results: int
    cost: int


def usage_id(batch_id: str, custom_id: str) -> str:
    """The usage record id of one result: the same every time it is metered (replays stay idempotent)."""
    return "bres_" + hashlib.sha256(f"{batch_id}\x00{custom_id}".encode()).hexdigest()[:40]


class BatchHandler:
    """The Message Batches endpoints (the pipeline's ``batches`` hook) and the background poll."""

    def __init__(
        self,
        gateway: Gateway,
        sessions: async_sessionmaker[AsyncSession],
        box: SecretBox,
        *,
        max_body: int,
        poll_interval: float,
        public_url: str | None,
        https: bool,
    ) -> None:
        self.gateway = gateway
        self._sessions = sessions
        self._box = box
        self.max_body = max_body
        self.poll_interval = poll_interval
        self._public_url = public_url.rstrip("/") if public_url else None
        self._scheme = "https" if https else "http"
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._poll_forever(), name="orgwarden-batches")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    # -- requests ----------------------------------------------------------------------------------

    async def handle(self, call: Call, exchange: Exchange, grant: KeyGrant) -> None:
        match = _PATH.match(call.path)
        if match is None:
            raise Refusal(404, "not_found_error", f"no such endpoint: {call.method} {call.path}")
        batch_id, action = match.group(1), match.group(2)
        method = call.method
        limits = self.gateway.limits
        if batch_id is None and method == "POST":
            await self._create(call, exchange, grant)
            return
        if batch_id is None and method == "GET":
            ticket = await limits.admit_batch(grant, None) if limits is not None else None
            await self._list(call, exchange, grant, ticket)
            return
        known = {(None, "GET"), (None, "DELETE"), ("cancel", "POST"), ("results", "GET")}
        if batch_id is None or (action, method) not in known:
            raise Refusal(404, "not_found_error", f"no such endpoint: {method} {call.path}")
        row = await self._visible(batch_id, grant)
        ticket = await limits.admit_batch(grant, None) if limits is not None else None
        if action == "results":
            await self._results(call, exchange, grant, row, ticket)
        elif action == "cancel":
            await self._relay_batch(call, exchange, grant, ticket, "POST", f"/v1/messages/batches/{row.id}/cancel")
        elif method == "DELETE":
            await self._delete(call, exchange, grant, row, ticket)
        else:
            await self._relay_batch(call, exchange, grant, ticket, "GET", f"/v1/messages/batches/{row.id}")

    async def _visible(self, batch_id: str, grant: KeyGrant) -> MessageBatch:
        """The batch, if the key's workspace created it through orgwarden and did not delete it; else 404."""
        async with self._sessions() as session:
            row = await MessageBatches(session).get(batch_id)
        if row is None or row.workspace_id != grant.workspace_id or row.deleted_at is not None:
            message = f"message batch {batch_id} not found in workspace {grant.workspace_id}"
            raise Refusal(404, "not_found_error", message)
        return row

    # -- create ------------------------------------------------------------------------------------

    async def _create(self, call: Call, exchange: Exchange, grant: KeyGrant) -> None:
        try:
            body = await read_body(exchange, self.max_body)
        except Refusal as refusal:
            if refusal.status == 413:
                refusal.message += " for a message batch (ORGWARDEN_BATCH_MAX_BODY_BYTES)"
            raise
        document, priced = self._inspect(body, grant, call.model_policy)
        limits = self.gateway.limits
        ticket = await limits.admit_batch(grant, priced) if limits is not None else None
        call.body = json.dumps(document, ensure_ascii=False).encode()  # what was checked, exactly
        try:
            response, payload = await self._call_json(call, exchange, grant, "POST", "/v1/messages/batches", call.body)
            if not 200 <= response.status < 300 or not isinstance(payload, dict) or not _batch_id_ok(payload):
                if limits is not None and ticket is not None:
                    limits.release_batch(ticket)
                ticket = None
                await self._answer(call, exchange, grant, response.status, payload, None)
                return
            batch_id = str(payload["id"])
            spend = ticket.spend if ticket is not None and ticket.budgets and ticket.checked else None
            row = MessageBatch(
                id=batch_id,
                organization_id=grant.organization_id,
                workspace_id=grant.workspace_id,
                api_key_id=grant.key_id,
                user_id=grant.user_id,
                created_at=utcnow(),
                processing_status=_status(payload),
                request_count=len(priced),
                reserved_picodollars=ticket.worst if spend is not None and ticket is not None else 0,
                reserved_counters=list(spend.reserved) if spend is not None else [],
                spend_counters=list(spend.counters) if spend is not None else [],
            )
            try:
                async with self._sessions() as session:
                    MessageBatches(session).add(row)
                    await session.commit()
            except Exception:
                # Untracked, the batch would run unmetered and outside every limit: cancel it
                # (best effort) and let the client know it did not take (503 while the database
                # is unreachable).
                log.error("batch %s created upstream but not recorded: cancelling it", batch_id)
                with contextlib.suppress(Refusal):
                    await self._call_json(call, exchange, grant, "POST", f"/v1/messages/batches/{batch_id}/cancel", b"")
                raise
            ticket_headers = ticket.headers if ticket is not None else []
            ticket = None  # held by the row from here on
        finally:
            if ticket is not None and limits is not None:  # the upstream never took it
                limits.release_batch(ticket)
        await self._audit(call, exchange, grant, "message_batch.create", batch_id, {"requests": len(priced)})
        await self._answer(call, exchange, grant, response.status, payload, ticket_headers)

    def _inspect(
        self, body: bytes, grant: KeyGrant, policy: EffectivePolicy | None = None
    ) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
        """The parsed create body with each request's residency applied, and each request's params
        with their JSON (what the spend limits price)."""
        try:
            document = loads(body)
        except NestedTooDeeply:
            raise Refusal(400, "invalid_request_error", TOO_DEEP) from None
        except ValueError:
            raise Refusal(400, "invalid_request_error", "request body is not valid JSON") from None
        if not isinstance(document, dict):
            raise Refusal(400, "invalid_request_error", "request body must be a JSON object")
        requests = document.get("requests")
        if not isinstance(requests, list) or not requests:
            raise Refusal(400, "invalid_request_error", "requests: must be a non-empty list")
        priced: list[tuple[dict[str, Any], bytes]] = []
        for index, item in enumerate(requests):
            where = f"requests[{index}]"
            if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
                raise Refusal(400, "invalid_request_error", f"{where}.custom_id: field required")
            params = item.get("params")
            if not isinstance(params, dict):
                raise Refusal(400, "invalid_request_error", f"{where}.params: must be an object")
            model = params.get("model")
            if not isinstance(model, str) or not model:
                raise Refusal(400, "invalid_request_error", f"{where}.params.model: field required")
            model_access.check(policy, model, f"{where}.params.model")
            max_tokens = params.get("max_tokens")
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                raise Refusal(400, "invalid_request_error", f"{where}.params.max_tokens: must be a positive integer")
            geo, insert = resolve_geo(params, grant, f"{where}.params.inference_geo")
            if insert:
                params["inference_geo"] = geo
            priced.append((params, json.dumps(params, ensure_ascii=False).encode()))
        return document, priced

    # -- list, retrieve, cancel, delete -------------------------------------------------------------

    async def _list(self, call: Call, exchange: Exchange, grant: KeyGrant, ticket: Ticket | None) -> None:
        query = parse_qs(exchange.query.decode("latin-1"))
        try:
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            raise Refusal(400, "invalid_request_error", "limit: must be an integer") from None
        if not 1 <= limit <= MAX_LIST:
            raise Refusal(400, "invalid_request_error", f"limit: must be between 1 and {MAX_LIST}")
        after_id, before_id = query.get("after_id", [None])[0], query.get("before_id", [None])[0]
        async with self._sessions() as session:
            rows, more = await MessageBatches(session).page(
                grant.workspace_id, after_id=after_id, before_id=before_id, limit=limit
            )
        gate = asyncio.Semaphore(LIST_FETCHES)

        async def fetch(row: MessageBatch) -> dict[str, Any] | None:
            async with gate:
                response, payload = await self._call_json(
                    call, exchange, grant, "GET", f"/v1/messages/batches/{row.id}", b""
                )
            if response.status == 404:
                return None  # gone upstream (expired, or deleted there): not shown
            if response.status != 200 or not isinstance(payload, dict):
                raise Refusal(502, "api_error", f"the upstream did not answer for message batch {row.id}")
            return self._rewrite(payload, exchange)

        found = await asyncio.gather(*(fetch(row) for row in rows))
        data = [item for item in found if item is not None]
        page = {
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        await self._send_json(call, exchange, grant, 200, page, ticket.headers if ticket else [])

    async def _relay_batch(
        self, call: Call, exchange: Exchange, grant: KeyGrant, ticket: Ticket | None, method: str, target: str
    ) -> None:
        response, payload = await self._call_json(call, exchange, grant, method, target, b"")
        if 200 <= response.status < 300 and isinstance(payload, dict):
            status = _status(payload)
            async with self._sessions() as session:
                await MessageBatches(session).set_status(str(payload.get("id")), status)
                await session.commit()
            if method == "POST":
                await self._audit(call, exchange, grant, "message_batch.cancel", str(payload.get("id")), {})
        await self._answer(call, exchange, grant, response.status, payload, ticket.headers if ticket else [])

    async def _delete(
        self, call: Call, exchange: Exchange, grant: KeyGrant, row: MessageBatch, ticket: Ticket | None
    ) -> None:
        if row.settled_at is None:  # its results go with it: meter them first (when it has ended)
            await self._meter_from_upstream(row, grant.upstream_api_key, forwarded_headers(exchange.headers))
        target = f"/v1/messages/batches/{row.id}"
        response, payload = await self._call_json(call, exchange, grant, "DELETE", target, b"")
        if 200 <= response.status < 300:
            async with self._sessions() as session:
                await MessageBatches(session).mark_deleted(row.id, utcnow())
                await session.commit()
            await self._audit(call, exchange, grant, "message_batch.delete", row.id, {})
        await self._answer(call, exchange, grant, response.status, payload, ticket.headers if ticket else [])

    # -- results -----------------------------------------------------------------------------------

    async def _results(
        self, call: Call, exchange: Exchange, grant: KeyGrant, row: MessageBatch, ticket: Ticket | None
    ) -> None:
        response = await self._upstream(
            grant.upstream_api_key, forwarded_headers(exchange.headers), "GET", f"/v1/messages/batches/{row.id}/results"
        )
        try:
            if response.status != 200:
                body = b"".join([chunk async for chunk in response])
                await self._answer(call, exchange, grant, response.status, _parsed(body), [])
                return
            claimed = await self._claim(row) if row.settled_at is None else None
            headers = [(b"content-type", response.header(b"content-type") or b"application/x-jsonl")]
            headers += self._own_headers(call, grant, ticket.headers if ticket else [])
            call.responded = True
            call.status = 200
            await exchange.start(200, headers)
            client = True
            meter = _ResultMeter(self, row) if claimed is not None else None
            async for chunk in response:
                if meter is not None:
                    await meter.feed(chunk)
                if client:
                    try:
                        await exchange.send(chunk)
                    except OSError:
                        client = False  # gone: the results are still read to the end to be metered
                        if meter is None:
                            return
            if meter is not None and claimed is not None:
                await self._settle(row, claimed, await meter.finish())
            if client:
                await exchange.finish()
        except UpstreamError as exc:
            log.warning("upstream failed while sending the results of %s: %s", row.id, exc)
            if not call.responded:
                raise Refusal(502, "api_error", "the upstream failed while sending the batch's results") from None
        finally:
            await response.aclose()

    async def _claim(self, row: MessageBatch) -> datetime | None:
        """This instance's claim on metering ``row`` (its time), or None if another has it or it is done."""
        now = utcnow()
        async with self._sessions() as session:
            won = await MessageBatches(session).claim(row.id, now, CLAIM_LEASE)
            await session.commit()
        return now if won else None

    async def _settle(self, row: MessageBatch, claimed: datetime, metered: Metered) -> None:
        """Mark ``row`` metered and replace its spend reservation by the metered cost, once."""
        async with self._sessions() as session:
            settled = await MessageBatches(session).settle(row.id, claimed, utcnow(), metered.results, metered.cost)
            await session.commit()
        limits = self.gateway.limits
        if settled and limits is not None:
            limits.settle_batch(row.reserved_counters, row.spend_counters, row.reserved_picodollars, metered.cost)

    async def _meter_from_upstream(
        self, row: MessageBatch, workspace_key: str | None, headers: list[tuple[bytes, bytes]]
    ) -> bool:
        """Read the batch's results from the upstream to meter them, if it has ended and nobody
        else meters it; True once it is metered here."""
        response = await self._upstream(workspace_key, headers, "GET", f"/v1/messages/batches/{row.id}/results")
        try:
            if response.status != 200:
                return False
            claimed = await self._claim(row)
            if claimed is None:
                return False
            meter = _ResultMeter(self, row)
            async for chunk in response:
                await meter.feed(chunk)
            await self._settle(row, claimed, await meter.finish())
            return True
        finally:
            await response.aclose()

    # -- the background poll -----------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.poll_interval)
            if self._stopping.is_set():
                return
            try:
                await self.poll()
            except Exception as exc:  # the next poll tries again
                log.error("batches: polling the upstream failed (%s)", exc)

    async def poll(self) -> None:
        """Meter every unsettled batch that has ended (or that the upstream no longer has)."""
        async with self._sessions() as session:
            rows = await MessageBatches(session).unsettled(POLL_BATCHES)
        now = utcnow()
        for row, sealed in rows:
            if row.metered_at is not None and row.metered_at > now - CLAIM_LEASE:
                continue  # someone is metering it
            key = self._box.open(sealed, row.workspace_id) if sealed else None
            headers = [(b"anthropic-version", b"2023-06-01"), (b"accept-encoding", b"identity")]
            try:
                response = await self._upstream(key, headers, "GET", f"/v1/messages/batches/{row.id}")
                try:
                    body = b"".join([chunk async for chunk in response])
                finally:
                    await response.aclose()
                payload = _parsed(body)
                if response.status == 404:  # gone without its results read: nothing can be metered
                    log.warning("batches: %s is gone upstream, never metered; its reservation is released", row.id)
                    if (claimed := await self._claim(row)) is not None:
                        await self._settle(row, claimed, Metered(0, 0))
                elif response.status == 200 and isinstance(payload, dict) and _status(payload) == "ended":
                    await self._meter_from_upstream(row, key, headers)
            except Refusal as refusal:
                log.warning("batches: cannot poll %s (%s)", row.id, refusal.message)

    # -- upstream and answers ----------------------------------------------------------------------

    async def _upstream(
        self, workspace_key: str | None, headers: list[tuple[bytes, bytes]], method: str, target: str, body: bytes = b""
    ) -> UpstreamResponse:
        upstream, key = self.gateway.upstreams.pick(workspace_key)
        sent = list(headers)
        if key is not None:
            sent.append((b"x-api-key", key.encode()))
        try:
            return await upstream.request(method, target, sent, body)
        except (ConnectTimedOut, ReadTimedOut):
            raise Refusal(504, "timeout_error", "the upstream did not answer in time") from None
        except Broken:
            raise Refusal(502, "api_error", "the upstream failed before answering") from None
        except UpstreamError:
            raise Refusal(502, "api_error", "the upstream could not be reached") from None

    async def _call_json(
        self, call: Call, exchange: Exchange, grant: KeyGrant, method: str, target: str, body: bytes
    ) -> tuple[UpstreamResponse, Any]:
        headers = forwarded_headers(exchange.headers)
        if self.gateway.identity is not None:
            headers = self.gateway.identity.apply(headers, grant)
        if body:
            headers = [h for h in headers if h[0] != b"content-type"] + [_JSON]
        response = await self._upstream(grant.upstream_api_key, headers, method, target, body)
        try:
            raw = b"".join([chunk async for chunk in response])
        except UpstreamError:
            raise Refusal(502, "api_error", "the upstream failed while answering") from None
        finally:
            await response.aclose()
        return response, _parsed(raw)

    async def _answer(
        self,
        call: Call,
        exchange: Exchange,
        grant: KeyGrant,
        status: int,
        payload: Any,
        extra: list[tuple[bytes, bytes]] | None,
    ) -> None:
        """The upstream's answer: a batch gets orgwarden's ``results_url``; an error goes as it came."""
        if 200 <= status < 300 and isinstance(payload, dict) and payload.get("type") == "message_batch":
            payload = self._rewrite(payload, exchange)
        await self._send_json(call, exchange, grant, status, payload, extra or [])

    async def _send_json(
        self,
        call: Call,
        exchange: Exchange,
        grant: KeyGrant,
        status: int,
        payload: Any,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        call.responded = True
        call.status = status
        await exchange.respond(status, [_JSON, *self._own_headers(call, grant, extra)], body)

    @staticmethod
    def _own_headers(call: Call, grant: KeyGrant, extra: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [
            (b"anthropic-organization-id", grant.organization_id.encode()),
            (b"anthropic-workspace-id", grant.workspace_id.encode()),
            *extra,
            (b"request-id", call.request_id.encode()),
        ]

    def _rewrite(self, batch: dict[str, Any], exchange: Exchange) -> dict[str, Any]:
        """The batch with its ``results_url`` on orgwarden (never the upstream's)."""
        if batch.get("results_url"):
            batch["results_url"] = f"{self._base_url(exchange)}/v1/messages/batches/{batch.get('id')}/results"
        return batch

    def _base_url(self, exchange: Exchange) -> str:
        if self._public_url is not None:
            return self._public_url
        host = next((v.decode("latin-1") for k, v in exchange.headers if k == b"host"), "")
        return f"{self._scheme}://{host if _HOST.match(host) else 'localhost'}"

    async def _audit(
        self, call: Call, exchange: Exchange, grant: KeyGrant, action: str, batch_id: str, details: dict[str, Any]
    ) -> None:
        caller = caller_of(grant)
        await self.gateway.recorder.put(
            "audit",
            {
                "id": ids.new_id(ids.AUDIT_EVENT),
                "organization_id": grant.organization_id,
                "occurred_at": utcnow(),
                "actor_type": caller.actor_type,
                "actor_id": caller.actor_id,
                "actor_user_id": caller.actor_user_id,
                "action": action,
                "target_type": "message_batch",
                "target_id": batch_id,
                "workspace_id": grant.workspace_id,
                "request_id": call.request_id,
                "source_ip": exchange.client_host(),
                "outcome": "success",
                "details": details,
            },
        )

    # -- metering one result -----------------------------------------------------------------------

    def record(self, row: MessageBatch, line: bytes) -> tuple[dict[str, Any], Entry] | None:
        """The usage record (and rollup entry) of one JSONL results line; None for a result that used
        nothing (errored, canceled, expired) or a line that is not a result."""
        try:
            item = json.loads(line)
        except ValueError:
            return None
        result = item.get("result") if isinstance(item, dict) else None
        if not isinstance(result, dict) or result.get("type") != "succeeded":
            return None
        message = result.get("message")
        extracted = from_message(json.dumps(message).encode())
        if not extracted.completed:
            return None
        catalog = self.gateway.catalog
        model_name = extracted.model or ""
        model = catalog.find(model_name) if model_name else None
        geo = extracted.inference_geo or "global"
        usage = extracted.usage
        parts = cost_of(catalog, model, usage, batch=True, inference_geo=geo) if model is not None else _NO_COST
        record: dict[str, Any] = {
            "id": usage_id(row.id, str(item.get("custom_id"))),
            "organization_id": row.organization_id,
            "workspace_id": row.workspace_id,
            "api_key_id": row.api_key_id,
            "model": model.id if model else model_name,
            "service_tier": "batch",
            "inference_geo": geo,
            "context_window": usage.context_window,
            "speed": extracted.speed or "standard",
            "endpoint": "batch",
            "stream": False,
            "completed": True,
            "usage_estimated": False,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_5m_tokens": usage.cache_creation_5m,
            "cache_creation_1h_tokens": usage.cache_creation_1h,
            "cache_read_tokens": usage.cache_read,
            "web_search_requests": usage.web_search_requests,
            "cost_picodollars": parts.total,
            "status": 200,
            "latency_ms": 0,
            "created_at": row.created_at,  # the day its spend was reserved on
            "user_id": row.user_id,
            "claude_code_session_id": None,  # a batch's results belong to no Claude Code session
            "claude_code_agent_id": None,
        }
        return record, Entry(record, parts, report_geo(model, geo))


class _ResultMeter:
    """Meters JSONL results as their bytes pass: one usage record per complete ``succeeded`` line."""

    def __init__(self, handler: BatchHandler, row: MessageBatch) -> None:
        self._handler = handler
        self._row = row
        self._rest = b""
        self.results = 0
        self.cost = 0

    async def feed(self, chunk: bytes) -> None:
        data = self._rest + chunk
        *lines, self._rest = data.split(b"\n")
        for line in lines:
            await self._line(line)

    async def finish(self) -> Metered:
        if self._rest.strip():
            await self._line(self._rest)
        self._rest = b""
        return Metered(self.results, self.cost)

    async def _line(self, line: bytes) -> None:
        if not line.strip():
            return
        found = self._handler.record(self._row, line)
        if found is None:
            return
        record, entry = found
        recorder = self._handler.gateway.recorder
        if not recorder.offer("usage", record, entry):
            await recorder.put("usage", record, entry)  # full: wait for room
        self.results += 1
        self.cost += int(record["cost_picodollars"])


def _parsed(body: bytes) -> Any:
    """The upstream's JSON answer, or its bytes as they came when they are not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return body


def _status(batch: Mapping[str, Any]) -> str:
    status = batch.get("processing_status")
    return status[:16] if isinstance(status, str) else "unknown"


def _batch_id_ok(batch: Mapping[str, Any]) -> bool:
    batch_id = batch.get("id")
    return isinstance(batch_id, str) and 0 < len(batch_id) <= 64
