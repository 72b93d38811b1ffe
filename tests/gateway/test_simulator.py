"""The simulator as an SDK user meets it through orgwarden: tool use whose input validates, thinking,
counts that agree, stop reasons, and the scripting headers and settings (``gateway.sim_reply``).

One SQLite server for the module (the simulator does not depend on the backend). Tool inputs are
checked with a small validator written here, independent of ``gateway.sim_schema``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import anthropic
import httpx
import pytest

from orgwarden.data import load_catalog
from orgwarden.gateway.simulator import Simulator
from tests.conftest import TLS, Server, dedicated_server, unique

MODEL = "claude-haiku-4-5"
USER = [{"role": "user", "content": "Hello, simulator"}]

WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
TIME: dict[str, Any] = {
    "name": "get_time",
    "description": "The time in a zone.",
    "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
}
# Every keyword the simulator promises to honour, nested.
BOOKING: dict[str, Any] = {
    "name": "book",
    "description": "Book a trip.",
    "input_schema": {
        "type": "object",
        "$defs": {
            "traveller": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 3, "maxLength": 40},
                    "age": {"type": "integer", "exclusiveMinimum": 17, "maximum": 120},
                    "email": {"type": "string", "format": "email"},
                },
                "required": ["name", "age", "email"],
                "additionalProperties": False,
            }
        },
        "properties": {
            "kind": {"const": "trip"},
            "cabin": {"enum": ["economy", "business"]},
            "seats": {"type": "integer", "minimum": 2, "multipleOf": 3},
            "price": {"type": "number", "minimum": 9.5},
            "refundable": {"type": "boolean"},
            "travellers": {"type": "array", "items": {"$ref": "#/$defs/traveller"}, "minItems": 2},
            "note": {"type": ["string", "null"]},
            "when": {"anyOf": [{"type": "string", "format": "date"}, {"type": "integer"}]},
            "optional": {"type": "string"},
        },
        "required": ["kind", "cabin", "seats", "price", "refundable", "travellers", "note", "when"],
        "additionalProperties": False,
    },
}


def invalid(schema: dict[str, Any], value: Any, root: dict[str, Any] | None = None) -> list[str]:
    """A tiny JSON Schema checker (the keywords above), for the tests' own judgement."""
    root = root or schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return invalid(root["$defs"][name], value, root)
    if "const" in schema and value != schema["const"]:
        return [f"{value!r} != const"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{value!r} not in enum"]
    if "anyOf" in schema:
        return [] if any(not invalid(s, value, root) for s in schema["anyOf"]) else [f"{value!r} fits no anyOf"]
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds or []
    python = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict,
              "array": list, "null": type(None)}  # fmt: skip
    if kinds and not any(isinstance(value, python[k]) and not (isinstance(value, bool) and k != "boolean")
                         for k in kinds):  # fmt: skip
        return [f"{value!r} is not {kinds}"]
    problems: list[str] = []
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 10**9):
            problems.append(f"{value!r} has the wrong length")
        if schema.get("format") == "email" and "@" not in value:
            problems.append(f"{value!r} is no email")
        if schema.get("format") == "date" and len(value.split("-")) != 3:
            problems.append(f"{value!r} is no date")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < schema.get("minimum", -(10**18)) or value > schema.get("maximum", 10**18):
            problems.append(f"{value!r} out of range")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            problems.append(f"{value!r} not above the exclusive minimum")
        if "multipleOf" in schema and value % schema["multipleOf"]:
            problems.append(f"{value!r} not a multiple")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append("too few items")
        for item in value:
            problems += invalid(schema.get("items", {}), item, root)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        problems += [f"missing {n}" for n in schema.get("required", []) if n not in value]
        for name, item in value.items():
            if name in properties:
                problems += invalid(properties[name], item, root)
            elif schema.get("additionalProperties") is False:
                problems.append(f"unexpected {name}")
    return problems


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with dedicated_server("sqlite", {}) as srv:
        yield srv


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    with server.http() as http:
        response = http.post("/v1/organizations/api_keys", json={"name": unique("sim")})
    assert response.status_code == 200, response.text
    return str(response.json()["key"])


@pytest.fixture(scope="module")
def client(server: Server, key: str) -> anthropic.Anthropic:
    return server.client(key)


def words(text: str) -> int:
    """Tokens of single-spaced text by the simulator's rule: nine characters of a word a token."""
    return sum(-(-len(word) // 9) for word in text.split(" "))


def text_of(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def test_tool_choice_any_answers_with_a_tool_use_whose_input_validates_against_a_rich_schema(
    client: anthropic.Anthropic,
) -> None:
    message = client.messages.create(
        model=MODEL, max_tokens=1024, messages=USER, tools=[BOOKING, WEATHER], tool_choice={"type": "any"}
    )
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["tool_use"]
    call = message.content[0]
    assert call.type == "tool_use"
    assert call.id.startswith("toolu_")
    assert call.name == "book"  # no tool named in the turn: the first one
    assert isinstance(call.input, dict)
    assert invalid(BOOKING["input_schema"], call.input) == []
    assert "optional" not in call.input  # minimal: required properties only
    assert len(call.input["travellers"]) == 2


def test_tool_choice_any_calls_the_tool_the_turn_names_and_tool_choice_tool_calls_the_named_one(
    client: anthropic.Anthropic,
) -> None:
    asked = [{"role": "user", "content": "What is the time? Use get_time please."}]
    named = client.messages.create(
        model=MODEL, max_tokens=256, messages=asked, tools=[WEATHER, TIME], tool_choice={"type": "any"}
    )
    assert [(b.type, getattr(b, "name", None)) for b in named.content] == [("tool_use", "get_time")]
    forced = client.messages.create(
        model=MODEL, max_tokens=256, messages=USER, tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_weather"},
    )  # fmt: skip
    assert forced.stop_reason == "tool_use"
    assert forced.content[0].type == "tool_use"
    assert forced.content[0].name == "get_weather"
    assert invalid(WEATHER["input_schema"], forced.content[0].input) == []
    with pytest.raises(anthropic.BadRequestError, match="no tool named 'nope'"):
        client.messages.create(
            model=MODEL, max_tokens=256, messages=USER, tools=[WEATHER], tool_choice={"type": "tool", "name": "nope"}
        )


def test_auto_uses_a_tool_the_turn_directs_with_its_valid_arguments_only(client: anthropic.Anthropic) -> None:
    ask = 'Please use get_weather {"city": "Paris", "days": 99, "unknown": 1} for me.'
    message = client.messages.create(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": ask}], tools=[WEATHER, TIME]
    )
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert "get_weather" in text_of(message)
    call = message.content[1]
    assert call.type == "tool_use"
    assert call.name == "get_weather"
    assert call.input == {"city": "Paris"}  # days out of range and an unknown property are left out
    assert invalid(WEATHER["input_schema"], call.input) == []


def test_auto_calls_every_tool_named_unless_parallel_tool_use_is_disabled(client: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "Check get_time first, then get_weather."}]
    both = client.messages.create(model=MODEL, max_tokens=256, messages=ask, tools=[WEATHER, TIME])
    assert [getattr(b, "name", b.type) for b in both.content] == ["text", "get_time", "get_weather"]
    one = client.messages.create(
        model=MODEL, max_tokens=256, messages=ask, tools=[WEATHER, TIME],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )  # fmt: skip
    assert [getattr(b, "name", b.type) for b in one.content] == ["text", "get_time"]
    reminder = [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>get_time is available</system-reminder>"},
        {"type": "text", "text": "Just say hello."}]}]  # fmt: skip
    plain = client.messages.create(model=MODEL, max_tokens=256, messages=reminder, tools=[WEATHER, TIME])
    assert plain.stop_reason == "end_turn"
    assert [b.type for b in plain.content] == ["text"]
    never = client.messages.create(
        model=MODEL, max_tokens=256, messages=ask, tools=[WEATHER, TIME], tool_choice={"type": "none"}
    )
    assert never.stop_reason == "end_turn"
    assert [b.type for b in never.content] == ["text"]


def test_an_agent_loop_ends_with_a_text_answer_about_the_tool_result(client: anthropic.Anthropic) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": 'use get_weather {"city": "Oslo"}'}]
    first = client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=[WEATHER])
    call = next(block for block in first.content if block.type == "tool_use")
    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}]},
    ]
    final = client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=[WEATHER])
    assert final.stop_reason == "end_turn"
    assert [block.type for block in final.content] == ["text"]
    assert text_of(final) == "The get_weather tool returned: Sunny, 21 C That is done."


@pytest.mark.parametrize("thinking", [{"type": "enabled", "budget_tokens": 2048}, {"type": "adaptive"}])
def test_thinking_comes_first_with_a_signature_streamed_as_the_api_streams_it(
    client: anthropic.Anthropic, thinking: dict[str, Any]
) -> None:
    request: dict[str, Any] = {"model": MODEL, "max_tokens": 4096, "messages": USER, "thinking": thinking}
    message = client.messages.create(**request)
    assert [block.type for block in message.content] == ["thinking", "text"]
    block = message.content[0]
    assert block.type == "thinking"
    assert block.thinking
    assert block.signature
    with client.messages.stream(**request) as stream:
        deltas = [event.delta.type for event in stream if event.type == "content_block_delta"]
        final = stream.get_final_message()
    assert deltas.count("signature_delta") == 1
    assert deltas.index("signature_delta") == deltas.count("thinking_delta")  # after the thinking, before the text
    assert [b.model_dump() for b in final.content] == [b.model_dump() for b in message.content]
    assert final.usage.model_dump() == message.usage.model_dump()
    with pytest.raises(anthropic.BadRequestError, match="Thinking may not be enabled"):
        client.messages.create(**request, tools=[WEATHER], tool_choice={"type": "any"})


def test_counts_agree_between_count_tokens_usage_and_the_streamed_message_delta(client: anthropic.Anthropic) -> None:
    request: dict[str, Any] = {
        "model": MODEL, "max_tokens": 512, "system": "You are terse.", "tools": [WEATHER, TIME],
        "messages": [{"role": "user", "content": 'use get_time {"zone": "Europe/Oslo"} and say something'}],
    }  # fmt: skip
    counted = client.messages.count_tokens(**{k: v for k, v in request.items() if k != "max_tokens"})
    message = client.messages.create(**request)
    assert counted.input_tokens == message.usage.input_tokens > 0
    with client.messages.stream(**request) as stream:
        partial = [e.snapshot for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    assert final.usage.model_dump() == message.usage.model_dump()
    same = [b.model_dump(exclude={"id"}) for b in message.content]
    assert [b.model_dump(exclude={"id"}) for b in final.content] == same
    assert partial
    assert partial[-1] == {"zone": "Europe/Oslo"}
    text = text_of(message)
    tool_json = json.dumps(message.content[1].input)  # type: ignore[union-attr]
    assert message.usage.output_tokens == words(text) + -(-len(tool_json) // 4)


def test_default_text_is_sentences_and_the_same_request_gets_the_same_answer(client: anthropic.Anthropic) -> None:
    one = client.messages.create(model=MODEL, max_tokens=256, messages=USER)
    two = client.messages.create(model=MODEL, max_tokens=256, messages=USER)
    other = client.messages.create(model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "Other"}],
                                   extra_headers={"anthropic-simulator-output-tokens": "40"})  # fmt: skip
    assert text_of(one) == text_of(two)
    assert text_of(one).startswith("Hello from the orgwarden simulator. ")
    assert ".." not in text_of(other)
    assert ".H" not in text_of(other)
    assert words(text_of(other)) == other.usage.output_tokens == 40


def test_stop_sequences_and_max_tokens_set_the_stop_reason(client: anthropic.Anthropic) -> None:
    canned = {"anthropic-simulator-reply": "alpha beta STOP gamma"}
    stopped = client.messages.create(
        model=MODEL, max_tokens=256, messages=USER, stop_sequences=["STOP", "beta gamma"], extra_headers=canned
    )
    assert (stopped.stop_reason, stopped.stop_sequence, text_of(stopped)) == ("stop_sequence", "STOP", "alpha beta ")
    assert stopped.usage.output_tokens == 3  # two words and the stop sequence
    cut = client.messages.create(model=MODEL, max_tokens=2, messages=USER, extra_headers=canned)
    assert (cut.stop_reason, text_of(cut), cut.usage.output_tokens) == ("max_tokens", "alpha beta", 2)
    no_room = client.messages.create(  # the input {"city": ""} is three tokens
        model=MODEL, max_tokens=2, messages=USER, tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert (no_room.stop_reason, no_room.content, no_room.usage.output_tokens) == ("max_tokens", [], 2)


def test_scripted_errors_come_through_orgwarden_with_retry_after(server: Server, key: str) -> None:
    body = {"model": MODEL, "max_tokens": 16, "messages": USER}
    with server.http(key) as http:
        limited = http.post("/v1/messages", json=body, headers={"anthropic-simulator-fault": "429"})
        later = http.post("/v1/messages", json=body, headers={"anthropic-simulator-fault": "429",
                                                              "anthropic-simulator-retry-after": "7"})  # fmt: skip
        overloaded = http.post("/v1/messages", json=body, headers={"anthropic-simulator-fault": "529"})
        broken = http.post("/v1/messages", json=body, headers={"anthropic-simulator-fault": "500"})
        wrong = http.post("/v1/messages", json=body, headers={"anthropic-simulator-fault": "418"})
    assert (limited.status_code, limited.headers["retry-after"], limited.json()["error"]["type"]) == (
        429, "1", "rate_limit_error")  # fmt: skip
    assert later.headers["retry-after"] == "7"
    assert (overloaded.status_code, overloaded.json()["error"]["type"]) == (529, "overloaded_error")
    assert (broken.status_code, broken.json()["error"]["type"]) == (500, "api_error")
    assert wrong.status_code == 400
    assert "anthropic-simulator-fault" in wrong.json()["error"]["message"]


def test_a_canned_reply_and_a_latency_are_scripted_by_headers(client: anthropic.Anthropic) -> None:
    reply = "Grüße aus dem Simulator."
    started = time.monotonic()
    message = client.messages.create(
        model=MODEL, max_tokens=64, messages=USER,
        extra_headers={"anthropic-simulator-reply": quote(reply), "anthropic-simulator-latency-ms": "300"},
    )  # fmt: skip
    assert time.monotonic() - started >= 0.3
    assert text_of(message) == reply
    assert message.usage.output_tokens == 5  # "Simulator." is two
    with pytest.raises(anthropic.BadRequestError, match="anthropic-simulator-latency-ms"):
        client.messages.create(
            model=MODEL, max_tokens=64, messages=USER, extra_headers={"anthropic-simulator-latency-ms": "soon"}
        )


def test_settings_script_every_answer_and_a_header_wins() -> None:
    with dedicated_server("sqlite", {"ORGWARDEN_SIMULATOR_REPLY": "Always this."}) as srv:
        with httpx.Client(base_url=srv.base_url, timeout=30, verify=TLS) as http:
            created = http.post("/v1/organizations/api_keys", json={"name": unique("sim")},
                                headers={"x-api-key": srv.admin_key, "anthropic-version": "2023-06-01"})  # fmt: skip
        client = srv.client(created.json()["key"])
        assert text_of(client.messages.create(model=MODEL, max_tokens=64, messages=USER)) == "Always this."
        headed = client.messages.create(
            model=MODEL, max_tokens=64, messages=USER, extra_headers={"anthropic-simulator-reply": "Not that."}
        )
        assert text_of(headed) == "Not that."
    faulty = Simulator(load_catalog(None), fault="529")
    status, body = faulty.answer_message({"model": MODEL, "max_tokens": 8, "messages": USER}, {})
    assert (status, body["error"]["type"]) == (529, "overloaded_error")
    status, body = faulty.answer_message(
        {"model": MODEL, "max_tokens": 8, "messages": USER}, {"anthropic-simulator-fault": ""}
    )
    assert status == 200
    assert body["content"][0]["text"].startswith("Hello from the orgwarden simulator.")


def test_hostile_tool_schemas_get_an_answer_not_an_error(client: anthropic.Anthropic) -> None:
    wide: dict[str, Any] = {"type": "integer"}
    for _ in range(12):
        wide = {"anyOf": [{"type": "string", "const": "never"}] * 40 + [wide], "allOf": [{}] * 40}
    tools = [
        {"name": "huge", "input_schema": {"type": "object", "required": ["s", "a"], "properties": {
            "s": {"type": "string", "minLength": 10**12},
            "a": {"type": "array", "minItems": 10**9, "items": {"type": "array", "minItems": 10**9}}}}},
        {"name": "wide", "input_schema": {"type": "object", "required": ["w"], "properties": {"w": wide}}},
        {"name": "junk", "input_schema": {"required": 5, "properties": "x", "allOf": ["y", 7]}},
    ]  # fmt: skip
    for name in ("huge", "wide", "junk"):
        message = client.messages.create(
            model=MODEL, max_tokens=8000, messages=[{"role": "user", "content": f'use {name} {{"w": true}}'}],
            tools=tools, tool_choice={"type": "tool", "name": name},
        )  # fmt: skip
        assert message.stop_reason == "tool_use"
        assert message.content[0].type == "tool_use"
        assert isinstance(message.content[0].input, dict)
