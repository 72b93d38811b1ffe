"""The pure parts of the data-plane hardening (issue 15): output estimates that never undercount the
simulator, streams and bodies metered without their final usage, JSON too deep, bounded memory."""

from __future__ import annotations

import json

import pytest

from orgwarden.data import load_catalog
from orgwarden.domain.bounded import BoundedMemo, BoundedSet, RateGate
from orgwarden.domain.jsonload import MAX_DEPTH, NestedTooDeeply, loads
from orgwarden.domain.tokens import estimate_output
from orgwarden.domain.usage import StreamMeter, from_message, from_partial
from orgwarden.gateway.limits import _fetches_content, _web_search_uses
from orgwarden.gateway.pipeline import _check_geo_named_once
from orgwarden.gateway.refusal import Refusal
from orgwarden.gateway.sim_reply import plan


def sse(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def start(output: int = 1) -> bytes:
    message = {"id": "msg_1", "type": "message", "model": "claude-haiku-4-5", "content": [],
               "usage": {"input_tokens": 12, "output_tokens": output}}  # fmt: skip
    return sse("message_start", {"type": "message_start", "message": message})


def delta(kind: str, field: str, value: str) -> bytes:
    return sse(
        "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": kind, field: value}}
    )


@pytest.mark.parametrize("tokens", [1, 2, 5, 6, 7, 20, 100, 5000])
def test_the_output_estimate_never_undercounts_the_simulators_answer(tokens: int) -> None:
    """The simulator's answer of N tokens is N words of at most ten characters (``gateway.sim_reply``)."""
    request = {"model": "m", "max_tokens": 10**6, "messages": [{"role": "user", "content": "Hi"}]}
    for seed in range(8):
        reply = plan(request, seed=seed, length=tokens, canned=None)
        assert reply.output_tokens == tokens
        assert estimate_output(len(reply.blocks[0].text.encode())) >= tokens


def test_a_stream_without_message_delta_is_estimated_from_every_kind_of_content_delta() -> None:
    meter = StreamMeter()
    for chunk in (start(), delta("text_delta", "text", "a" * 30), delta("input_json_delta", "partial_json", "b" * 30),
                  delta("thinking_delta", "thinking", "\u00e9" * 15)):  # fmt: skip
        meter.feed(chunk)
    assert meter.result.usage.output_tokens == 1  # message_start's placeholder
    settled = meter.settled(max_tokens=1000)
    assert settled.estimated
    assert settled.usage.output_tokens == 30  # 90 bytes (the e-acute is two) at three a token
    assert settled.usage.input_tokens == 12


def test_the_estimate_is_capped_by_max_tokens_and_never_below_a_figure_seen() -> None:
    meter = StreamMeter()
    meter.feed(start(output=50) + delta("text_delta", "text", "x" * 3000))  # several events in one chunk
    assert meter.settled(max_tokens=200).usage.output_tokens == 200
    small = StreamMeter()
    small.feed(start(output=50) + delta("text_delta", "text", "x" * 3))
    assert small.settled(max_tokens=200).usage.output_tokens == 50


def test_a_stream_without_message_start_takes_the_input_estimate_and_crlf_events_count_too() -> None:
    meter = StreamMeter()
    meter.feed(delta("text_delta", "text", "q" * 30).replace(b"\n", b"\r\n"))
    assert meter.content_bytes == 30
    settled = meter.settled(max_tokens=100, input_estimate=25)
    assert (settled.estimated, settled.usage.input_tokens, settled.usage.output_tokens) == (True, 25, 10)


def test_a_stream_with_its_final_usage_is_not_estimated() -> None:
    meter = StreamMeter()
    for chunk in (start(), delta("text_delta", "text", "x" * 3000),
                  sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 7}})):  # fmt: skip
        meter.feed(chunk)
    settled = meter.settled(max_tokens=1000)
    assert (settled.estimated, settled.usage.output_tokens) == (False, 7)


def test_a_stream_split_anywhere_counts_the_same_content() -> None:
    whole = start() + delta("text_delta", "text", "y" * 300) + delta("text_delta", "text", "z" * 300)
    one = StreamMeter()
    one.feed(whole)
    bytewise = StreamMeter()
    for i in range(len(whole)):
        bytewise.feed(whole[i : i + 1])
    assert one.content_bytes == bytewise.content_bytes == 600


def test_pieces_of_many_events_count_as_one_event_at_a_time_a_broken_delta_among_them() -> None:
    """A piece holding many events parses their deltas in one call; a broken one makes it fall back
    to each on its own, so the others still count, as they do when every event comes alone."""
    events = [start(), delta("text_delta", "text", "\u00e9" * 10), b"event: content_block_delta\ndata: {broken\n\n",
              b": a comment\n\n", delta("input_json_delta", "partial_json", '{"a": 1}'),
              delta("thinking_delta", "thinking", "t" * 7),
              sse("message_delta", {"type": "message_delta", "usage": {"output_tokens": 9}})]  # fmt: skip
    alone = StreamMeter()
    for event in events:
        alone.feed(event)
    together = StreamMeter()
    whole = b"".join(events)
    together.feed(whole[:5])  # a cut inside the first event, then the rest in one piece
    together.feed(whole[5:])
    assert alone.content_bytes == together.content_bytes == 20 + 8 + 7
    assert (together.started, together.final, together.result.usage.output_tokens) == (True, True, 9)


def test_a_message_cut_half_way_is_estimated_from_its_content_and_the_request() -> None:
    body = json.dumps({"id": "msg_1", "type": "message", "content": [{"type": "text", "text": "w" * 600}],
                       "usage": {"input_tokens": 3, "output_tokens": 200}}).encode()  # fmt: skip
    cut = body[: len(body) // 2]
    assert not from_message(cut).completed
    partial = from_partial(cut, max_tokens=1000, input_estimate=40)
    assert partial.estimated
    assert partial.usage.input_tokens == 40
    assert partial.usage.output_tokens >= 100  # the half of 600 characters that came, and more


def test_json_nested_too_deeply_raises_its_own_value_error_and_upstream_bodies_meter_as_nothing() -> None:
    deep = b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)
    with pytest.raises(NestedTooDeeply, match="nested too deeply"):
        loads(deep)
    with pytest.raises(NestedTooDeeply):
        loads(b'{"n": 12345678901234567890, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}")  # the stdlib's path
    assert loads(b"[" * 500 + b"]" * 500) is not None
    assert from_message(b'{"type": "message", "content": ' + deep + b"}").usage.output_tokens == 0
    meter = StreamMeter()
    meter.feed(b"event: message_delta\ndata: " + deep + b"\n\n")
    assert meter.result.usage.output_tokens == 0


def test_a_bounded_set_forgets_its_oldest_member() -> None:
    names = BoundedSet(3)
    assert [names.add(n) for n in ("a", "b", "a", "c", "d")] == [True, True, False, True, True]
    assert len(names) == 3
    assert "a" not in names
    assert "d" in names


def test_a_bounded_memo_reads_like_a_dict_and_forgets_its_oldest_entry() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(2)
    assert memo.remember("a", 1) == 1
    memo.remember("b", 2)
    memo.remember("a", 3)  # a key already there: nothing forgotten
    memo.remember("c", 4)
    assert dict(memo) == {"b": 2, "c": 4}  # "a" was the first in
    assert len(memo) == 2
    assert memo.get("c") == 4


def test_a_rate_gate_passes_its_burst_then_its_rate_and_counts_the_rest() -> None:
    gate = RateGate(rate=10, burst=20)
    assert sum(gate.allow(0.0) for _ in range(100)) == 20
    assert gate.suppressed == 80
    assert sum(gate.allow(1.0) for _ in range(100)) == 10  # one second: ten more
    assert (gate.take_suppressed(), gate.suppressed, gate.total_suppressed) == (170, 0, 170)


CATALOG = load_catalog()


def user(*blocks: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": list(blocks)}]}


URL_IMAGE = {"type": "image", "source": {"type": "url", "url": "u"}}


@pytest.mark.parametrize(
    ("request_", "fetches"),
    [
        ({"messages": [{"role": "user", "content": "see https://example.com"}]}, False),
        (user(URL_IMAGE), True),
        (user({"type": "document", "source": {"type": "file", "file_id": "f"}}), True),
        (user({"type": "tool_result", "content": [URL_IMAGE]}), True),
        (user({"type": "image", "source": {"type": ["url"], "url": "u"}}), False),
        ({"messages": [], "mcp_servers": [{"type": "url", "url": "https://mcp.example.com"}]}, True),
        ({"messages": [], "tools": [{"type": "web_fetch_20250910", "name": "web_fetch"}]}, True),
        ({"messages": [], "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}]}, False),
    ],
)
def test_requests_whose_input_the_upstream_fetches_are_recognised(request_: dict[str, object], fetches: bool) -> None:
    assert _fetches_content(request_, json.dumps(request_).encode()) is fetches


def test_web_search_without_max_uses_cannot_be_bounded() -> None:
    assert (
        _web_search_uses([{"type": "web_search_20250305", "max_uses": 3}, {"type": "web_search", "max_uses": 2}]) == 5
    )
    with pytest.raises(Refusal, match="without max_uses"):
        _web_search_uses([{"type": "web_search_20250305"}])


@pytest.mark.parametrize("escaped", ["inference_geo".replace(c, f"\\u{ord(c):04X}") for c in "inferc_go"])
def test_inference_geo_named_twice_is_refused_however_a_character_of_it_is_escaped(escaped: str) -> None:
    body = b'{"inference_geo": "us", "model": "m", "' + escaped.encode() + b'": "global"}'
    with pytest.raises(Refusal, match="named more than once"):
        _check_geo_named_once(body, "wrkspc_1")


def test_a_body_naming_inference_geo_once_passes_with_other_escapes() -> None:
    _check_geo_named_once(b'{"inference_geo": "us", "text": "caf\\u00e9 \\u003c\\u0000"}', "wrkspc_1")
    _check_geo_named_once(b'{"inference_geo": "us", "inference\\u005fzone": "x"}', "wrkspc_1")  # another key
