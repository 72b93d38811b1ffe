"""What the simulator answers to a Messages request: its content blocks, stop reason and output tokens.

Pure and deterministic (no I/O, no clock): the same request and script give the same blocks, so a
streamed answer and a JSON one carry the same content and usage. The rules (the README's
"The simulator" repeats them):

* **Tokens.** Text is cut into tokens by ``TOKEN``: up to nine characters of a word with the space
  before it (so at most ten characters, as ``domain.tokens`` assumes); a longer word takes one token
  per nine characters; a run of spaces is a token, and trailing whitespace joins the last token. A ``tool_use``
  block costs one token per four characters of its input's JSON. ``output_tokens`` is the sum over
  the blocks produced.
* **Text.** The default answer is readable sentences separated by spaces, starting with
  "Hello from the orgwarden simulator." and continuing with sentences picked by ``seed`` (a hash
  of the request); ``length`` tokens long (16 unless scripted). A canned reply replaces it.
* **Tools.** ``tool_choice`` ``any`` calls the first tool the last user turn names (else the first
  tool); ``tool`` calls the named tool; ``none`` calls nothing. With ``auto`` (or no
  ``tool_choice``) the simulator calls a tool when the last user turn asks for it: a directive
  ``use NAME {json}`` calls NAME with those arguments, and a tool's name written as a whole word
  (case-sensitive) calls it with a minimal input; in the order they appear, one per tool, only the
  first with ``disable_parallel_tool_use``. Text inside ``<system-reminder>`` tags (which Claude
  Code adds to user turns and tool results) is not read. The input is the minimal instance of the tool's
  ``input_schema`` with the directive's arguments laid over it where they keep it valid
  (``sim_schema.fill``), so it always validates. With ``auto`` a short text block comes first.
  ``stop_reason`` is ``tool_use``.
* **Tool results.** A last user turn holding ``tool_result`` blocks (and ``auto``) gets a final text
  answer naming each tool and quoting the start of its result; ``stop_reason`` ``end_turn``.
* **Thinking.** ``thinking`` ``enabled`` (``budget_tokens``) or ``adaptive`` puts a thinking block
  with a ``signature`` first; with ``display: omitted`` its text is empty but its tokens are still
  counted, as the API bills them.
* **Limits.** ``stop_sequences``: the text stops before the first one found, ``stop_reason``
  ``stop_sequence`` (the sequence itself counts one token). ``max_tokens``: the content is cut
  there (a ``tool_use`` that does not fit is left out), ``stop_reason`` ``max_tokens``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orgwarden.gateway import sim_schema

DEFAULT_OUTPUT_TOKENS = 16
THINKING_TOKENS = 24
TOOL_CHARS_PER_TOKEN = 4
RESULT_QUOTE_CHARS = 160
TOKEN = re.compile(r"\s?\S{1,9}(?:\s+$)?|\s+")  # trailing whitespace joins the last token
_REMINDER = re.compile(r"<system-reminder>.*?(?:</system-reminder>|$)", re.DOTALL)
_DIRECTIVE = re.compile(r"\buse\s+([A-Za-z0-9_.:-]+)\s*(?=\{)")

FIRST_SENTENCE = "Hello from the orgwarden simulator."
SENTENCES = (
    "This answer was made up offline and reached no model.",
    "The same request always gets the same answer.",
    "Each word counts as one output token.",
    "Usage and cost are metered as for a real answer.",
    "Request headers can script errors, latency and replies.",
    "Tools and thinking are simulated as well.",
    "Nothing here leaves the machine.",
)
THOUGHTS = (
    "The user asked for something.",
    "I should answer briefly and plainly.",
    "A tool may help with this request.",
    "Let me check what the last turn says.",
    "The answer should be short.",
)


def tokens(text: str) -> list[str]:
    """``text`` cut into the simulator's tokens (joined back, they give ``text``)."""
    return TOKEN.findall(text)


_FIRST = tuple(tokens(FIRST_SENTENCE))
_MORE = tuple(tuple(tokens(" " + s)) for s in SENTENCES)
_THOUGHTS = tuple(tuple(tokens(" " + s)) for s in THOUGHTS)


def _generated(first: tuple[str, ...], more: tuple[tuple[str, ...], ...], seed: int, length: int) -> list[str]:
    pieces = list(first[:length])
    turn = 0
    while len(pieces) < length:
        pieces += more[(seed + 3 * turn) % len(more)]
        turn += 1
    return pieces[:length]


class Refused(Exception):
    """A request the API would refuse (400 ``invalid_request_error``), with its message."""


@dataclass(slots=True)
class Block:
    """One content block: its kind, its tokens (the input JSON's chunks for ``tool_use``)."""

    kind: str
    pieces: list[str]
    name: str = ""
    tool_id: str = ""
    tool_input: Any = None
    signature: str = ""
    hidden: bool = False  # a thinking block shown without its text (display: omitted)

    @property
    def text(self) -> str:
        return "" if self.hidden else "".join(self.pieces)

    def as_json(self) -> dict[str, Any]:
        if self.kind == "tool_use":
            return {"type": "tool_use", "id": self.tool_id, "name": self.name, "input": self.tool_input}
        if self.kind == "thinking":
            return {"type": "thinking", "thinking": self.text, "signature": self.signature}
        return {"type": "text", "text": self.text}


@dataclass(slots=True)
class Reply:
    blocks: list[Block] = field(default_factory=list)
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    output_tokens: int = 0


def _tool_block(tool: Mapping[str, Any], given: Mapping[str, Any]) -> Block:
    schema = tool.get("input_schema")
    value = sim_schema.fill(schema, given) if isinstance(schema, dict) else {}
    encoded = json.dumps(value)
    step = TOOL_CHARS_PER_TOKEN
    pieces = [encoded[i : i + step] for i in range(0, len(encoded), step)] or ["{}"]
    tool_id = "toolu_01" + secrets.token_hex(11)
    return Block("tool_use", pieces, name=str(tool["name"]), tool_id=tool_id, tool_input=value)


def _user_text(content: Any) -> str:
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        text = "\n".join(p for p in parts if isinstance(p, str))
    else:
        return ""
    return _REMINDER.sub(" ", text) if "<system-reminder>" in text else text


def _asked_for(text: str, tools: Mapping[str, Mapping[str, Any]]) -> list[tuple[int, str, dict[str, Any]]]:
    """(position, tool name, arguments) of every tool the text asks for: directives, then mentions."""
    asked: list[tuple[int, str, dict[str, Any]]] = []
    decoder = json.JSONDecoder()
    for match in _DIRECTIVE.finditer(text):
        if match.group(1) not in tools:
            continue
        try:
            arguments, _ = decoder.raw_decode(text, match.end())
        except (ValueError, RecursionError):
            arguments = {}
        asked.append((match.start(), match.group(1), arguments if isinstance(arguments, dict) else {}))
    named = {name for _, name, _ in asked}
    for name in tools:
        if name in named:
            continue
        found = re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)
        if found is not None:
            asked.append((found.start(), name, {}))
    return sorted(asked, key=lambda item: item[0])


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = " ".join(b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    else:
        text = ""
    if "<system-reminder>" in text:
        text = _REMINDER.sub(" ", text)
    text = " ".join(text.split())
    return text if len(text) <= RESULT_QUOTE_CHARS else text[: RESULT_QUOTE_CHARS - 3] + "..."


def _final_answer(messages: list[Any], results: list[dict[str, Any]]) -> str:
    names: dict[str, str] = {}
    if len(messages) >= 2 and isinstance(messages[-2], dict) and isinstance(messages[-2].get("content"), list):
        for block in messages[-2]["content"]:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                names[str(block.get("id"))] = str(block.get("name"))
    sentences = []
    for result in results:
        name = names.get(str(result.get("tool_use_id")), "requested")
        verb = "failed with" if result.get("is_error") is True else "returned"
        quote = _result_text(result.get("content"))
        sentences.append(f"The {name} tool {verb}: {quote}" if quote else f"The {name} tool {verb} nothing.")
    return " ".join(sentences) + " That is done."


def _thinking(request: Mapping[str, Any], seed: int) -> Block | None:
    config = request.get("thinking")
    if not isinstance(config, dict) or config.get("type") not in ("enabled", "adaptive"):
        return None
    length = THINKING_TOKENS
    budget = config.get("budget_tokens")
    if isinstance(budget, int) and budget > 0:
        length = min(length, budget)
    pieces = _generated((), _THOUGHTS, seed, length)
    pieces[0] = pieces[0].lstrip()
    digest = hashlib.sha256(f"{seed}:{''.join(pieces)}".encode()).digest()
    signature = base64.b64encode(b"orgwarden-simulator" + digest * 3).decode()
    return Block("thinking", pieces, signature=signature, hidden=config.get("display") == "omitted")


def _tool_calls(request: Mapping[str, Any], messages: list[Any]) -> tuple[list[Block], list[dict[str, Any]]]:
    """The tool_use blocks to answer with, and the tool_result blocks of the last user turn."""
    raw_tools = request.get("tools")
    tools: dict[str, Mapping[str, Any]] = {
        str(t["name"]): t
        for t in (raw_tools if isinstance(raw_tools, list) else [])
        if isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("input_schema"), dict)
    }
    choice = request.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {"type": "auto"}
    kind = choice.get("type", "auto")
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    content = last.get("content") if last.get("role") == "user" else None
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"] if isinstance(
        content, list
    ) else []  # fmt: skip
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or name not in tools:
            raise Refused(f"tool_choice.name: no tool named {str(name)[:100]!r} in tools")
        given = {n: a for _, n, a in _asked_for(_user_text(content), tools) if n == name}
        return [_tool_block(tools[name], given.get(name, {}))], results
    if kind == "none" or not tools:
        return [], results
    if kind == "any":
        asked = _asked_for(_user_text(content), tools)
        _, name, arguments = asked[0] if asked else (0, next(iter(tools)), {})
        return [_tool_block(tools[name], arguments)], results
    if results:
        return [], results
    asked = _asked_for(_user_text(content), tools)
    if choice.get("disable_parallel_tool_use") is True:
        asked = asked[:1]
    return [_tool_block(tools[name], arguments) for _, name, arguments in asked], results


def plan(request: Mapping[str, Any], *, seed: int, length: int | None, canned: str | None) -> Reply:
    """The answer to ``request`` (already checked to have a model and a positive ``max_tokens``)."""
    raw_messages = request.get("messages")
    messages: list[Any] = raw_messages if isinstance(raw_messages, list) else []
    if canned is None and not ({"tools", "thinking", "stop_sequences"} & request.keys()):
        last = messages[-1] if messages else None
        if isinstance(last, dict) and isinstance(last.get("content"), str):  # plain text: the benchmark's path
            return _limit([Block("text", _generated(_FIRST, _MORE, seed, length or DEFAULT_OUTPUT_TOKENS))], request,
                          "end_turn")  # fmt: skip
    thinking = _thinking(request, seed)
    choice = request.get("tool_choice")
    forced = isinstance(choice, dict) and choice.get("type") in ("any", "tool")
    if thinking is not None and forced:
        raise Refused("Thinking may not be enabled when tool_choice forces tool use.")
    calls, results = _tool_calls(request, messages)
    blocks = [thinking] if thinking is not None else []
    if canned is not None:
        blocks.append(Block("text", tokens(canned)))
    elif calls and not forced:
        names = ", ".join(dict.fromkeys(c.name for c in calls))
        blocks.append(Block("text", tokens(f"I will use the {names} tool{'s' if ',' in names else ''}.")))
    elif results and not calls:
        blocks.append(Block("text", tokens(_final_answer(messages, results))))
    elif not calls:
        blocks.append(Block("text", _generated(_FIRST, _MORE, seed, length or DEFAULT_OUTPUT_TOKENS)))
    blocks += calls
    return _limit(blocks, request, "tool_use" if calls else "end_turn")


def _limit(blocks: list[Block], request: Mapping[str, Any], stop: str) -> Reply:
    """Apply ``stop_sequences`` then ``max_tokens`` to ``blocks``."""
    reply = Reply(stop_reason=stop)
    sequences = request.get("stop_sequences")
    if isinstance(sequences, list) and sequences:
        for index, block in enumerate(blocks):
            if block.kind != "text":
                continue
            text = block.text
            hits = [(text.find(s), s) for s in sequences if isinstance(s, str) and s and s in text]
            if hits:
                at, sequence = min(hits)
                blocks = [*blocks[:index], Block("text", tokens(text[:at]))]
                reply.stop_reason, reply.stop_sequence = "stop_sequence", sequence
                reply.output_tokens = 1  # the stop sequence itself was generated
                break
    budget = int(request["max_tokens"])
    for block in blocks:
        room = budget - reply.output_tokens
        if len(block.pieces) > room:
            reply.stop_reason, reply.stop_sequence = "max_tokens", None
            if block.kind != "tool_use" and room > 0:
                block.pieces = block.pieces[:room]
                reply.blocks.append(block)
            reply.output_tokens = budget
            break
        reply.blocks.append(block)
        reply.output_tokens += len(block.pieces)
    return reply
