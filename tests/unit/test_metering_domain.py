"""Prices, costs and usage extraction: exact, and indifferent to how a stream is chunked."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from orgwarden.data import load_catalog
from orgwarden.domain.catalog import CatalogError, parse_catalog
from orgwarden.domain.pricing import TokenUsage, cost_of, picodollars_to_cents
from orgwarden.domain.usage import StreamMeter, from_message

CATALOG = load_catalog()


def sse(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


STREAM = b"".join(
    [
        sse("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "model": "claude-sonnet-4-6", "content": [],
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 6,
                      "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 4},
                      "output_tokens": 1, "service_tier": "standard"}}}),
        sse("content_block_start", {"type": "content_block_start", "index": 0}),
        sse("ping", {"type": "ping"}),
        sse("content_block_delta", {"type": "content_block_delta", "delta": {"text": "event: message_delta"}}),
        sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                              "usage": {"output_tokens": 20, "server_tool_use": {"web_search_requests": 2}}}),
        sse("message_stop", {"type": "message_stop"}),
    ]
)  # fmt: skip


def test_the_shipped_catalogue_resolves_ids_and_aliases() -> None:
    assert CATALOG.find("claude-haiku-4-5") is CATALOG.find("claude-haiku-4-5-20251001")
    sonnet = CATALOG.find("claude-sonnet-4-6")
    assert sonnet is not None
    assert sonnet.prices["cache_write_5m"] == Decimal("3.75")
    assert sonnet.prices["cache_write_1h"] == Decimal(6)
    assert sonnet.prices["cache_read"] == Decimal("0.3")
    assert CATALOG.find("claude-unknown") is None


def test_a_price_that_is_not_a_whole_number_of_picodollars_is_refused() -> None:
    with pytest.raises(CatalogError, match="whole number of picodollars"):
        parse_catalog({"models": [{"id": "m", "display_name": "M", "created_at": "2025-01-01T00:00:00Z",
                                   "input": "0.0000001", "output": "1"}]})  # fmt: skip


def test_a_catalogue_with_a_duplicate_name_is_refused() -> None:
    model = {"id": "m", "display_name": "M", "created_at": "2025-01-01T00:00:00Z", "input": "1", "output": "1"}
    with pytest.raises(CatalogError, match="used twice"):
        parse_catalog({"models": [model, {**model, "id": "n", "aliases": ["m"]}]})


def test_cost_is_exact_per_token_kind_with_batch_and_geo_multipliers() -> None:
    opus = CATALOG.find("claude-opus-4-6")
    assert opus is not None
    usage = TokenUsage(input_tokens=1000, output_tokens=100, cache_creation_5m=10, cache_creation_1h=10, cache_read=50)
    cost = cost_of(CATALOG, opus, usage)
    # $5 in, $25 out, 6.25 / 10 cache writes, 0.5 cache read per million tokens, as picodollars (x 1e6 per token).
    assert (cost.input, cost.output) == (5_000_000_000, 2_500_000_000)
    assert (cost.cache_write_5m, cost.cache_write_1h, cost.cache_read) == (62_500_000, 100_000_000, 25_000_000)
    assert cost.total == 7_687_500_000
    geo = cost_of(CATALOG, opus, usage, inference_geo="us", batch=True)
    assert geo.total == int(Decimal(7_687_500_000) * Decimal("1.1") * Decimal("0.5"))
    older = CATALOG.find("claude-sonnet-4-5")
    assert older is not None
    assert cost_of(CATALOG, older, usage, inference_geo="us") == cost_of(CATALOG, older, usage)


def test_web_searches_cost_ten_dollars_a_thousand_and_cents_are_exact() -> None:
    haiku = CATALOG.find("claude-haiku-4-5")
    assert haiku is not None
    cost = cost_of(CATALOG, haiku, TokenUsage(web_search_requests=3))
    assert cost.web_search == 30_000_000_000  # 3 cents
    assert picodollars_to_cents(cost.total) == Decimal(3)
    assert picodollars_to_cents(1) == Decimal("1E-10")


def test_usage_is_read_from_a_message_body() -> None:
    body = json.dumps({"type": "message", "id": "msg_x", "model": "m", "stop_reason": "end_turn",
                       "usage": {"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 5}})  # fmt: skip
    result = from_message(body.encode())
    assert result.completed
    assert result.usage == TokenUsage(input_tokens=3, output_tokens=4, cache_creation_5m=5)
    assert from_message(b"not json").usage == TokenUsage()
    assert from_message(b'{"type": "error"}').completed is False


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, len(STREAM)])
def test_stream_usage_is_the_same_however_the_bytes_are_chunked(size: int) -> None:
    meter = StreamMeter()
    for start in range(0, len(STREAM), size):
        meter.feed(STREAM[start : start + size])
    result = meter.result
    assert result.usage == TokenUsage(
        input_tokens=10, output_tokens=20, cache_creation_5m=2, cache_creation_1h=4, cache_read=4, web_search_requests=2
    )
    assert (result.message_id, result.model, result.stop_reason, result.completed) == (
        "msg_1", "claude-sonnet-4-6", "end_turn", True,
    )  # fmt: skip


def test_stream_usage_is_the_same_fed_one_whole_event_at_a_time_or_split_at_any_event() -> None:
    """Upstreams send whole events per chunk; chunks with no event metering reads are skipped
    unparsed, which must not lose an event that straddles chunks."""
    events = [event + b"\n\n" for event in STREAM.split(b"\n\n") if event]
    feeds = [events]  # one event per chunk
    feeds += [[b"".join(events[:i]), b"".join(events[i:])] for i in range(1, len(events))]
    middle = STREAM.index(b"event: content_block_delta") + 5
    feeds.append([STREAM[:middle], STREAM[middle:]])  # a skippable event split in two
    for chunks in feeds:
        meter = StreamMeter()
        for chunk in chunks:
            meter.feed(chunk)
        assert meter.result.usage.output_tokens == 20
        assert meter.result.usage.input_tokens == 10
        assert meter.result.completed is True


def test_a_stream_cut_short_is_metered_with_what_was_seen() -> None:
    meter = StreamMeter()
    meter.feed(STREAM[: STREAM.index(b"event: message_delta")])
    assert meter.result.usage.input_tokens == 10
    assert meter.result.usage.output_tokens == 1
    assert meter.result.completed is False


def test_crlf_event_boundaries_are_understood() -> None:
    meter = StreamMeter()
    meter.feed(STREAM.replace(b"\n", b"\r\n"))
    assert meter.result.usage.output_tokens == 20


def test_cost_is_the_exact_decimal_product_for_every_model_tier_and_geo() -> None:
    """Rates are cached per model and multiplier as whole picodollars per token: every cost equals
    tokens x price x multipliers computed in decimals, for random usage of every shipped model."""
    import random

    from orgwarden.domain.catalog import PICO_PER_TOKEN_PER_PRICE
    from orgwarden.domain.pricing import multiplier

    rng = random.Random(7)
    kinds = {"input": "input_tokens", "output": "output_tokens", "cache_write_5m": "cache_creation_5m",
             "cache_write_1h": "cache_creation_1h", "cache_read": "cache_read"}  # fmt: skip
    for model in CATALOG.models:
        for batch in (False, True):
            for geo in (None, "global", "us"):
                for _ in range(20):
                    counts = {field: rng.choice([0, 1, rng.randrange(10**7), rng.randrange(10**12)])
                              for field in kinds.values()}  # fmt: skip
                    usage = TokenUsage(**counts, web_search_requests=rng.randrange(50))
                    factor = multiplier(CATALOG, model, batch=batch, inference_geo=geo)
                    cost = cost_of(CATALOG, model, usage, batch=batch, inference_geo=geo)
                    for kind, field in kinds.items():
                        exact = counts[field] * model.prices[kind] * factor * PICO_PER_TOKEN_PER_PRICE
                        assert exact == int(exact)
                        assert getattr(cost, kind) == int(exact)
                    assert cost.web_search == usage.web_search_requests * 10**10
