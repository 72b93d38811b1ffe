"""What the gateway reports of each data-plane request it answered: an access-log line and metrics.

``Gateway.serve`` calls ``GatewayObserver.answered`` once per request, refusals included. The line
(logger ``orgwarden.access``, level INFO) is made only while the access log is on (only its values,
a tuple, here: the record and its text are the log-writing thread's work, ``logs.access``), and holds no
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


# The fields of an access line, in the order ``access_values`` gives them (and the JSON format names them).
FIELD_NAMES: Final = (
    "request_id", "key_id", "workspace_id", "method", "path", "model", "status", "latency_ms", "input_tokens",
    "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "stream", "client", "session_id",
)  # fmt: skip
_TEXT: Final = (
    "%s %s %s %d %sms key=%s workspace=%s model=%s stream=%s input=%d output=%d cache_write=%d cache_read=%d session=%s"
)


def _quoted(text: str) -> str:
    """``text`` as a JSON string: the quotes alone when nothing in it needs escaping (the usual path
    and model), ``json.dumps`` otherwise, so no control character or quote can forge a line."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text)


def text_message(values: tuple[Any, ...]) -> str:
    """The message of an access line from its values (``FIELD_NAMES``' order): a fixed order,
    client-chosen strings quoted."""
    (rid, key, workspace, method, path, model, status, latency,
     input_, output, written, read, stream, client, session) = values  # fmt: skip
    return _TEXT % (
        rid, client or "-", _quoted(f"{method} {path}"), status, latency, key or "-", workspace or "-",
        _quoted(model), "yes" if stream else "no", input_, output, written, read, _quoted(session) if session else "-",
    )  # fmt: skip


class GatewayObserver:
    """Access log and metrics for the data plane; ``metrics`` is None when they are switched off."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics

    def answered(self, call: Call, exchange: Exchange) -> None:
        seconds = time.perf_counter() - call.started
        if self.metrics is not None:
            self.metrics.request("data", call.endpoint or "none", call.method, call.status, seconds)
        if logs.access_on():
            # Only the values are taken here; the record and its text are the writing thread's work.
            logs.access(access_values(call, exchange, seconds))

    def upstream(self, call: Call, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.upstream(call.endpoint, seconds)


def access_values(call: Call, exchange: Exchange, seconds: float) -> tuple[Any, ...]:
    """An access line's values in ``FIELD_NAMES``' order (a tuple: cheaper to make than a dict, and
    this runs for every request)."""
    grant, extracted = call.grant, call.extracted
    usage = extracted.usage if extracted is not None else None
    model = call.model or (extracted.model if extracted is not None else None) or ""
    if usage is None:
        input_ = output = written = read = 0
    else:
        input_, output, read = usage.input_tokens, usage.output_tokens, usage.cache_read
        written = usage.cache_creation_5m + usage.cache_creation_1h
    return (
        call.request_id,
        grant.key_id if grant is not None else None,
        grant.workspace_id if grant is not None else None,
        call.method[:16],
        call.path[:MAX_FIELD],
        model[:MAX_FIELD],
        call.status,
        round(seconds * 1000, 1),
        input_,
        output,
        written,
        read,
        call.stream,
        exchange.client_host(),
        call.session_id[:64] if call.session_id else None,  # Claude Code's session
    )
