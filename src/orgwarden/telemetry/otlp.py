"""OTLP/HTTP bodies in and out: content types, compression, protobuf and OTLP/JSON.

Messages are the official definitions (``opentelemetry-proto``); nothing is parsed by hand. The
OTLP/JSON encoding differs from protobuf's canonical JSON mapping in ways that ``json_format`` does
not know by itself, and these are handled here:

* enum values may be numbers (``"aggregationTemporality": 2``) and 64-bit integers strings or
  numbers: ``json_format`` reads both;
* field names are lowerCamelCase (``json_format`` also reads the proto names);
* ``traceId`` and ``spanId`` are hex, not base64: they are converted before parsing;
* fields this version does not know are ignored (a newer exporter may send them).

Refusals are ``Refusal``s, rendered by the receiver in the Anthropic error envelope.
"""

from __future__ import annotations

import base64
import contextlib
import json
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from orgwarden.domain.jsonload import TOO_DEEP
from orgwarden.gateway.refusal import Refusal

M = TypeVar("M", bound=Message)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_HEX_IDS = frozenset({"traceId", "spanId", "trace_id", "span_id"})


@dataclass(frozen=True, slots=True)
class Encoding:
    content_type: str  # PROTOBUF or JSON
    compression: str  # "identity", "gzip", "x-gzip" or "deflate"


def negotiate(content_type: str | None, content_encoding: str | None) -> Encoding:
    """The body's encoding from its headers; anything else is 415."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in _CONTENT_TYPES:
        raise Refusal(
            415,
            "invalid_request_error",
            f"unsupported Content-Type {content_type!r}: send {PROTOBUF} (OTLP/protobuf) or {JSON} (OTLP/JSON)",
        )
    compression = (content_encoding or "identity").strip().lower() or "identity"
    if compression != "identity" and compression not in _WBITS:
        raise Refusal(
            415, "invalid_request_error", f"unsupported Content-Encoding {content_encoding!r}: send gzip or none"
        )
    return Encoding(_CONTENT_TYPES[media], compression)


def decompress(body: bytes, compression: str, limit: int) -> bytes:
    """The body as sent before compression, refused with 413 once it grows past ``limit`` bytes."""
    if compression == "identity":
        return body
    inflater = zlib.decompressobj(_WBITS[compression])
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise Refusal(400, "invalid_request_error", f"request body is not valid {compression} data: {exc}") from None
    if len(plain) > limit:
        raise Refusal(
            413, "request_too_large", f"request body is larger than the limit of {limit} bytes once decompressed"
        )
    if not inflater.eof:
        raise Refusal(400, "invalid_request_error", f"request body is truncated {compression} data")
    return plain


def parse(body: bytes, content_type: str, message: type[M]) -> M:
    """Decode an export request; a body that is not one is 400 naming what is wrong."""
    parsed = message()
    name = message.DESCRIPTOR.name
    if content_type == PROTOBUF:
        try:
            parsed.ParseFromString(body)
        except DecodeError as exc:
            problem = f"request body is not a valid {name} (protobuf): {exc}"
            raise Refusal(400, "invalid_request_error", problem) from None
        return parsed
    try:
        return _parse_json(body, parsed, name)
    except RecursionError:  # the standard library's parser, or walking what it parsed
        raise Refusal(400, "invalid_request_error", TOO_DEEP) from None


def _parse_json(body: bytes, parsed: M, name: str) -> M:
    try:
        tree = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refusal(400, "invalid_request_error", f"request body is not valid JSON: {exc}") from None
    if not isinstance(tree, dict):
        raise Refusal(400, "invalid_request_error", f"request body must be a JSON object (an OTLP/JSON {name})")
    try:
        json_format.ParseDict(_hex_ids_to_base64(tree), parsed, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise Refusal(400, "invalid_request_error", f"request body is not a valid {name} (OTLP/JSON): {exc}") from None
    return parsed


def serialize(message: Message, content_type: str) -> bytes:
    """An export response in the request's encoding (an empty message is ``b""`` or ``{}``)."""
    if content_type == PROTOBUF:
        return message.SerializeToString()
    return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()


def _hex_ids_to_base64(value: Any) -> Any:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping expects base64."""
    if isinstance(value, list):
        return [_hex_ids_to_base64(item) for item in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in _HEX_IDS and isinstance(item, str):
            with contextlib.suppress(ValueError):  # not hex: left to json_format, which reports it
                item = base64.b64encode(bytes.fromhex(item)).decode()
        else:
            item = _hex_ids_to_base64(item)
        out[key] = item
    return out
