"""The simulator's Message Batches: create, list, retrieve, cancel, delete and results, like the API.

Batches live in the simulator's process, at most ``MAX_BATCHES`` of them (the oldest ended batch is
forgotten first; a full simulator refuses a new batch with 429), each of at most ``MAX_REQUESTS``
requests. A batch is ``in_progress`` until ``seconds`` have passed since it was created (the
``ORGWARDEN_SIMULATOR_BATCH_SECONDS`` setting, or the ``anthropic-simulator-batch-seconds`` header
of the create request for that batch), then ``ended``: each request is answered then by
``Simulator.answer_message`` (with the create request's ``anthropic-simulator-*`` headers), so
results look like the simulator's messages (``succeeded``), or carry its error (``errored``).
Cancelling an ``in_progress`` batch makes it ``canceling`` in the cancel's answer and ``ended`` from
the next read on, every request ``canceled``. Only an ended batch can be deleted. Results are served
as JSONL, one line per request in the order sent, a piece per line.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Send

from orgwarden.domain.clock import rfc3339

MAX_BATCHES = 256
MAX_REQUESTS = 10_000
BATCH_SECONDS_HEADER = "anthropic-simulator-batch-seconds"
_PATH = re.compile(r"^/v1/messages/batches(?:/([^/]+)(?:/(cancel|results))?)?$")
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

Answer = Callable[[dict[str, Any], Mapping[str, str]], tuple[int, dict[str, Any]]]


@dataclass
class SimBatch:
    id: str
    created_at: datetime
    ends_at: float  # monotonic
    requests: list[tuple[str, dict[str, Any]]]
    headers: dict[str, str]
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    canceled: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)


def is_batches_path(path: str) -> bool:
    return path == "/v1/messages/batches" or path.startswith("/v1/messages/batches/")


def _error(status: int, kind: str, message: str) -> tuple[int, bytes]:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_sim"}
    return status, json.dumps(body).encode()


class SimulatedBatches:
    """The batches of one simulator; ``answer`` answers one Messages request (``answer_message``)."""

    def __init__(self, answer: Answer, *, seconds: float) -> None:
        self._answer = answer
        self._seconds = seconds
        self._batches: dict[str, SimBatch] = {}

    async def serve(
        self, send: Send, method: str, path: str, query: bytes, headers: dict[str, str], body: bytes
    ) -> None:
        status, payload, lines = self._dispatch(method, path, query, headers, body)
        if lines is None:
            response = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            await send({"type": "http.response.start", "status": status, "headers": response})
            await send({"type": "http.response.body", "body": payload})
            return
        jsonl = [(b"content-type", b"application/x-jsonl")]
        await send({"type": "http.response.start", "status": 200, "headers": jsonl})
        for line in lines:
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _dispatch(
        self, method: str, path: str, query: bytes, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, list[bytes] | None]:
        match = _PATH.match(path)
        if match is None:
            return (*_error(404, "not_found_error", f"no such endpoint: {method} {path}"), None)
        batch_id, action = match.group(1), match.group(2)
        base = "http://" + headers.get("host", "simulator")
        if batch_id is None:
            if method == "POST":
                return (*self._create(headers, body, base), None)
            if method == "GET":
                return (*self._list(query, base), None)
            return (*_error(405, "invalid_request_error", f"method not allowed: {method} {path}"), None)
        batch = self._batches.get(batch_id)
        if batch is None:
            return (*_error(404, "not_found_error", f"batch {batch_id} not found"), None)
        self._advance(batch)
        if action is None and method == "GET":
            return 200, json.dumps(self._view(batch, base)).encode(), None
        if action is None and method == "DELETE":
            if batch.ended_at is None:
                message = f"batch {batch_id} cannot be deleted while it is processing; cancel it first"
                return (*_error(400, "invalid_request_error", message), None)
            del self._batches[batch_id]
            return 200, json.dumps({"id": batch_id, "type": "message_batch_deleted"}).encode(), None
        if action == "cancel" and method == "POST":
            view = self._cancel(batch, base)
            return 200, json.dumps(view).encode(), None
        if action == "results" and method == "GET":
            if batch.ended_at is None:
                return (*_error(400, "invalid_request_error", f"batch {batch_id} has not ended yet"), None)
            return 200, b"", [json.dumps(line).encode() + b"\n" for line in batch.results]
        return (*_error(405, "invalid_request_error", f"method not allowed: {method} {path}"), None)

    def _create(self, headers: dict[str, str], body: bytes, base: str) -> tuple[int, bytes]:
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):
            return _error(400, "invalid_request_error", "request body is not valid JSON")
        requests = request.get("requests") if isinstance(request, dict) else None
        if not isinstance(requests, list) or not requests:
            return _error(400, "invalid_request_error", "requests: must be a non-empty list")
        if len(requests) > MAX_REQUESTS:
            return _error(400, "invalid_request_error", f"requests: at most {MAX_REQUESTS} in the simulator")
        parsed: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        for index, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            params = item.get("params") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id) or custom_id in seen:
                message = f"requests.{index}.custom_id: must be 1-64 characters of [a-zA-Z0-9_-], unique in the batch"
                return _error(400, "invalid_request_error", message)
            if not isinstance(params, dict):
                return _error(400, "invalid_request_error", f"requests.{index}.params: must be an object")
            seen.add(custom_id)
            parsed.append((custom_id, params))
        if len(self._batches) >= MAX_BATCHES and not self._forget_one():
            return _error(429, "rate_limit_error", f"the simulator holds {MAX_BATCHES} batches in progress")
        seconds = self._seconds
        wanted = headers.get(BATCH_SECONDS_HEADER)
        if wanted is not None:
            try:
                seconds = max(0.0, min(float(wanted), 86_400.0))
            except ValueError:
                return _error(400, "invalid_request_error", f"{BATCH_SECONDS_HEADER}: must be a number of seconds")
        simulated = {k: v for k, v in headers.items() if k.startswith("anthropic-simulator-")}
        batch_id = "msgbatch_01" + secrets.token_hex(11)
        batch = SimBatch(batch_id, datetime.now(UTC), time.monotonic() + seconds, parsed, simulated)
        self._batches[batch_id] = batch
        return 200, json.dumps(self._view(batch, base)).encode()

    def _forget_one(self) -> bool:
        """Forget the oldest ended batch to make room; False when every batch is still processing."""
        for batch_id, batch in self._batches.items():
            self._advance(batch)
            if batch.ended_at is not None:
                del self._batches[batch_id]
                return True
        return False

    def _list(self, query: bytes, base: str) -> tuple[int, bytes]:
        params = parse_qs(query.decode("latin-1"))
        try:
            limit = max(1, min(int(params.get("limit", ["20"])[0]), 1000))
        except ValueError:
            return _error(400, "invalid_request_error", "limit: must be an integer")
        batches = sorted(self._batches.values(), key=lambda b: b.id, reverse=True)  # newest first
        after, before = params.get("after_id", [None])[0], params.get("before_id", [None])[0]
        if after is not None:
            batches = [b for b in batches if b.id < after]
        if before is not None:
            batches = [b for b in batches if b.id > before][-limit:]
        page = batches[:limit]
        for batch in page:
            self._advance(batch)
        data = [self._view(b, base) for b in page]
        body = {
            "data": data,
            "has_more": len(batches) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
        return 200, json.dumps(body).encode()

    def _cancel(self, batch: SimBatch, base: str) -> dict[str, Any]:
        if batch.ended_at is not None:
            return self._view(batch, base)
        batch.canceled = True
        batch.cancel_initiated_at = datetime.now(UTC)
        view = self._view(batch, base)
        view["processing_status"] = "canceling"
        batch.ends_at = time.monotonic()  # ended from the next read on
        return view

    def _advance(self, batch: SimBatch) -> None:
        """End the batch once its time has come, answering each of its requests."""
        if batch.ended_at is not None or time.monotonic() < batch.ends_at:
            return
        batch.ended_at = datetime.now(UTC)
        for custom_id, params in batch.requests:
            if batch.canceled:
                batch.results.append({"custom_id": custom_id, "result": {"type": "canceled"}})
                continue
            status, answer = self._answer(params, batch.headers)
            if status == 200:
                result: dict[str, Any] = {"type": "succeeded", "message": answer}
            else:
                result = {"type": "errored", "error": answer}
            batch.results.append({"custom_id": custom_id, "result": result})
        batch.requests = []

    def _view(self, batch: SimBatch, base: str) -> dict[str, Any]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch.ended_at is None:
            counts["processing"] = len(batch.requests)
        else:
            for line in batch.results:
                counts[line["result"]["type"]] += 1
        ended = batch.ended_at is not None
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts,
            "ended_at": rfc3339(batch.ended_at),
            "created_at": rfc3339(batch.created_at),
            "expires_at": rfc3339(batch.created_at + timedelta(hours=24)),
            "archived_at": None,
            "cancel_initiated_at": rfc3339(batch.cancel_initiated_at),
            "results_url": f"{base}/v1/messages/batches/{batch.id}/results" if ended else None,
        }
