"""What the gateway reports of each data-plane request it answered: an access-log line and metrics.

``Gateway.serve`` calls ``GatewayObserver.answered`` once per request, refusals included. The line
(logger ``orgwarden.access``, level INFO) is made only while the access log is on (only its fields
here: the record and its text are the log-writing thread's work, ``logs.access``), and holds no
secret and no header value: request id, key id, workspace id, method, path, model, status, latency
in ms, token counts, stream or not, the client's address, and Claude Code's session id (the
``x-claude-code-session-id`` header, a random UUID; ``-`` for other clients). Client-chosen strings (path, model) are
cut to ``MAX_FIELD`` characters and, in the text format, quoted (JSON string syntax) so that no
control character can forge a line.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Final

from orgwarden.observability import logs

if TYPE_CHECKING:  # (not prometheus-client at import: see observability.multiproc)
    from orgwarden.gateway.exchange import Exchange
    from orgwarden.gateway.pipeline import Call
    from orgwarden.observability.metrics import Metrics

MAX_FIELD: Final = 256


def _quoted(text: str) -> str:
    """``text`` as a JSON string: the quotes alone when nothing in it needs escaping (the usual path
    and model), ``json.dumps`` otherwise, so no control character or quote can forge a line."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text)


def text_message(f: dict[str, Any]) -> str:
    """The message of an access line: its fields in a fixed order, client-chosen strings quoted."""
    return (
        f"{f['request_id']} {f['client'] or '-'} {_quoted(f['method'] + ' ' + f['path'])} {f['status']}"
        f" {f['latency_ms']}ms key={f['key_id'] or '-'} workspace={f['workspace_id'] or '-'}"
        f" model={_quoted(f['model'])} stream={'yes' if f['stream'] else 'no'}"
        f" input={f['input_tokens']} output={f['output_tokens']}"
        f" cache_write={f['cache_creation_input_tokens']} cache_read={f['cache_read_input_tokens']}"
        f" session={_quoted(f['session_id']) if f['session_id'] else '-'}"
    )


class GatewayObserver:
    """Access log and metrics for the data plane; ``metrics`` is None when they are switched off."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics

    def answered(self, call: Call, exchange: Exchange) -> None:
        seconds = time.perf_counter() - call.started
        if self.metrics is not None:
            self.metrics.request("data", call.endpoint or "none", call.method, call.status, seconds)
        if logs.access_on():
            # Only the fields are made here; the record and its text are the writing thread's work.
            logs.access(access_fields(call, exchange, seconds))

    def upstream(self, call: Call, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.upstream(call.endpoint, seconds)


def access_fields(call: Call, exchange: Exchange, seconds: float) -> dict[str, Any]:
    grant, extracted = call.grant, call.extracted
    usage = extracted.usage if extracted is not None else None
    model = call.model or (extracted.model if extracted is not None else None) or ""
    return {
        "request_id": call.request_id,
        "key_id": grant.key_id if grant is not None else None,
        "workspace_id": grant.workspace_id if grant is not None else None,
        "method": call.method[:16],
        "path": call.path[:MAX_FIELD],
        "model": model[:MAX_FIELD],
        "status": call.status,
        "latency_ms": round(seconds * 1000, 1),
        "input_tokens": usage.input_tokens if usage else 0,
        "output_tokens": usage.output_tokens if usage else 0,
        "cache_creation_input_tokens": usage.cache_creation_5m + usage.cache_creation_1h if usage else 0,
        "cache_read_input_tokens": usage.cache_read if usage else 0,
        "stream": call.stream,
        "client": exchange.client_host(),
        "session_id": call.session_id[:64] if call.session_id else None,  # Claude Code's session
    }
