"""Rate limits end to end: limits set with the Admin API, enforced on a real ``orgwarden serve``,
seen through the official SDK (and httpx for raw streams).

Every bucket refills continuously at ``limit / 60`` units a second. Request buckets hold
``rate_limit_request_burst_seconds`` worth (1 s by default, at least one request); token buckets hold
a whole minute. A bucket that has never been used starts full, so the first request on fresh
buckets gives exact ``remaining`` headers; after that the tests bound the expectation by the refill
the measured elapsed time allows (``refill``).

Each test makes its own workspaces and keys (and sets limits at the workspace and key levels only);
tests that set organization values run on a server of their own. Limit changes reach the gateway
through the cache-event log; ``Probe.sync`` waits until a change made after the test's own is in
force, which proves the test's changes are too (each reload reads every value).

What a refused request costs: a 429 (or a "can never fit" 400) is answered before the upstream is
reached, so it makes no usage record, and its reservation is taken from no bucket.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anthropic
import pytest
from anthropic.types import Message, MessageParam

from orgwarden.storage.tables import UsageRecord
from orgwarden.storage.uow import UnitOfWork
from tests.conftest import BACKENDS, SdkHttpClient, Server, dedicated_server, query_db, unique

MODEL = "claude-sonnet-4-6"  # group claude-sonnet-4 ("Claude Sonnet 4.x")
GROUP = "Claude Sonnet 4.x"
PROBE_MODEL = "claude-haiku-4-5"  # another group: the probe's requests touch no bucket under test
MESSAGES: list[MessageParam] = [{"role": "user", "content": "How many requests may I send?"}]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
KINDS = ("requests", "input-tokens", "output-tokens", "tokens")
Limits = Mapping[str, int | None]


# --------------------------------------------------------------------------------------------------
# helpers: the Admin API


def admin(server: Server, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    with server.http() as http:
        response = http.request(method, path, **kwargs)
    assert response.status_code == 200, f"{method} {path}: {response.text}"
    return dict(response.json())


def entry_id(server: Server, *, model: str | None = None, group_type: str | None = None) -> str:
    """The organization's ``rate_limit_id`` for a model's group or a surface group."""
    params = {"model": model} if model else {"group_type": group_type}
    (entry,) = admin(server, "GET", "/v1/organizations/rate_limits", params=params)["data"]
    return str(entry["id"])


def _body(limits: Limits) -> dict[str, Any]:
    return {"limits": [{"type": kind, "value": value} for kind, value in limits.items()]}


def set_org_limits(server: Server, entry: str, limits: Limits) -> None:
    admin(server, "POST", f"/v1/organizations/rate_limits/{entry}", json=_body(limits))


def set_workspace_limits(server: Server, workspace_id: str, entry: str, limits: Limits) -> None:
    admin(server, "POST", f"/v1/organizations/workspaces/{workspace_id}/rate_limits/{entry}", json=_body(limits))


def set_key_limits(server: Server, key_id: str, entry: str, limits: Limits) -> None:
    admin(server, "POST", f"/v1/organizations/api_keys/{key_id}/rate_limits/{entry}", json=_body(limits))


def new_workspace(server: Server) -> str:
    return str(admin(server, "POST", "/v1/organizations/workspaces", json={"name": unique("rl")})["id"])


@dataclass(frozen=True)
class Key:
    id: str
    secret: str
    workspace_id: str


def new_key(server: Server, workspace_id: str) -> Key:
    body = admin(
        server, "POST", "/v1/organizations/api_keys", json={"name": unique("rl"), "workspace_id": workspace_id}
    )
    return Key(body["id"], body["key"], workspace_id)


# --------------------------------------------------------------------------------------------------
# helpers: the data plane


def sdk(server: Server, key: Key) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key.secret, base_url=server.base_url, max_retries=0, http_client=SdkHttpClient())


@dataclass(frozen=True)
class Answer:
    """A successful Messages answer: its headers (lower-case names) and the parsed message."""

    headers: dict[str, str]
    message: Message

    @property
    def request_id(self) -> str:
        return self.headers["request-id"]

    def remaining(self, kind: str) -> int:
        return int(self.headers[f"anthropic-ratelimit-{kind}-remaining"])

    def limit(self, kind: str) -> int:
        return int(self.headers[f"anthropic-ratelimit-{kind}-limit"])


def steering(output: int | None = None, cache_read: bool = False, fault: str | None = None) -> dict[str, str]:
    """The simulator's steering headers (they pass through orgwarden)."""
    headers = {}
    if output is not None:
        headers["anthropic-simulator-output-tokens"] = str(output)
    if cache_read:
        headers["anthropic-simulator-cache"] = "read"
    if fault is not None:
        headers["anthropic-simulator-fault"] = fault
    return headers


def create(
    client: anthropic.Anthropic,
    *,
    max_tokens: int = 16,
    output: int | None = None,
    cache_read: bool = False,
    model: str = MODEL,
    **body: Any,
) -> Answer:
    raw = client.messages.with_raw_response.create(
        model=model,
        max_tokens=max_tokens,
        messages=body.pop("messages", MESSAGES),
        extra_headers=steering(output, cache_read),
        **body,
    )
    return Answer({k.lower(): v for k, v in raw.headers.items()}, raw.parse())


def refused(call: Callable[[], object]) -> anthropic.APIStatusError:
    with pytest.raises(anthropic.APIStatusError) as info:
        call()
    return info.value


def assert_refusal(error: anthropic.APIStatusError, status: int, kind: str, *parts: str) -> dict[str, str]:
    """The Anthropic error envelope with ``status`` and ``kind``, its message naming every part;
    returns the response headers (lower-case names)."""
    assert error.status_code == status, error.response.text
    body = error.response.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == kind, body
    for part in parts:
        assert part in body["error"]["message"], body
    assert body["request_id"] == error.response.headers["request-id"]
    return {k.lower(): v for k, v in error.response.headers.items()}


def ratelimit_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("anthropic-ratelimit-")}


def reset_of(headers: Mapping[str, str], kind: str) -> float:
    """The ``reset`` header of ``kind``, checked to be RFC 3339 (UTC, whole seconds), as Unix time."""
    raw = headers[f"anthropic-ratelimit-{kind}-reset"]
    assert RFC3339.match(raw), raw
    return datetime.fromisoformat(raw).astimezone(UTC).timestamp()


def refill(limit: int, seconds: float) -> int:
    """The most a token bucket of ``limit`` per minute can refill in ``seconds`` (rounded up, plus one
    for the floor of the header)."""
    return math.ceil(limit / 60 * seconds) + 1


def read_records(server: Server) -> dict[str, UsageRecord]:
    async def read(uow: UnitOfWork) -> dict[str, UsageRecord]:
        return {row.id: row for row in await uow.usage.for_organization(server.organization["id"])}

    return query_db(server.db, read)


def wait_for_record(server: Server, request_id: str) -> UsageRecord:
    """The usage record of one request. The gateway settles a request's reservation right after it
    queues the record, so once the record is written the settlement is done too."""
    deadline = time.monotonic() + 5
    while (record := read_records(server).get(request_id)) is None:
        assert time.monotonic() < deadline, f"no usage record for {request_id} after 5 s"
        time.sleep(0.05)
    return record


def records_of_key(server: Server, key: Key, expected: int) -> list[UsageRecord]:
    """The key's usage records once ``expected`` are written, and after a pause proving no more come."""
    deadline = time.monotonic() + 5
    while len(found := [r for r in read_records(server).values() if r.api_key_id == key.id]) < expected:
        assert time.monotonic() < deadline, f"{len(found)} of {expected} records after 5 s"
        time.sleep(0.1)
    time.sleep(0.5)  # more than two flush intervals: a record of a refused request would show up now
    found = [r for r in read_records(server).values() if r.api_key_id == key.id]
    assert len(found) == expected, [(r.id, r.endpoint, r.status) for r in found]
    return found


def poll(check: Callable[[], bool], timeout: float = 5.0) -> float:
    """Call ``check`` every 0.1 s until it holds; the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not in force after {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - started


class Probe:
    """A key in a workspace of its own whose value for another model group is bumped after a test's
    changes: once the gateway enforces the new value, it enforces everything written before it."""

    _counter = itertools.count(1)

    def __init__(self, server: Server) -> None:
        self.server = server
        self.key = new_key(server, new_workspace(server))
        self.entry = entry_id(server, model=PROBE_MODEL)
        self.client = sdk(server, self.key)

    def sync(self) -> None:
        value = 10**9 + next(self._counter)
        set_key_limits(self.server, self.key.id, self.entry, {"requests_per_minute": value})
        poll(lambda: create(self.client, model=PROBE_MODEL, max_tokens=1).headers.get(
            "anthropic-ratelimit-requests-limit") == str(value))  # fmt: skip


# --------------------------------------------------------------------------------------------------
# servers


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    """SQLite, default settings, a simulator streaming 50 tokens a second (JSON answers are instant)."""
    with dedicated_server("sqlite", {"ORGWARDEN_SIMULATOR_TOKENS_PER_SECOND": "50"}) as server:
        yield server


@pytest.fixture(scope="module")
def probe(srv: Server) -> Probe:
    return Probe(srv)


@pytest.fixture(scope="module")
def burst() -> Iterator[Server]:
    """Request buckets holding a whole minute of the RPM limit (``rate_limit_request_burst_seconds=60``)."""
    with dedicated_server("sqlite", {"ORGWARDEN_RATE_LIMIT_REQUEST_BURST_SECONDS": "60"}) as server:
        yield server


@pytest.fixture(scope="module")
def burst_probe(burst: Server) -> Probe:
    return Probe(burst)


def limited_key(server: Server, probe: Probe, limits: Limits) -> Key:
    """A key in a workspace of its own with these key-level values for MODEL's group, in force."""
    key = new_key(server, new_workspace(server))
    set_key_limits(server, key.id, entry_id(server, model=MODEL), limits)
    probe.sync()
    return key


# --------------------------------------------------------------------------------------------------
# 1. continuous request buckets


def test_60_rpm_allows_one_request_a_second_refusing_the_next_with_retry_after(srv: Server, probe: Probe) -> None:
    """RPM 60 with the default burst is a bucket of one request refilling one a second: two requests
    back to back give 200 then 429 (``retry-after: 1``, the message naming the key's limit, headers
    on the refusal too); 1.1 s later a request passes. The 429 makes no usage record."""
    key = limited_key(srv, probe, {"requests_per_minute": 60})
    client = sdk(srv, key)

    started = time.monotonic()
    first = create(client)
    assert (first.limit("requests"), first.remaining("requests")) == (60, 0)
    error = refused(lambda: create(client))
    assert time.monotonic() - started < 0.9, "too slow to observe a one-second bucket"
    headers = assert_refusal(
        error, 429, "rate_limit_error", f"API key {key.id} rate limit of 60 requests per minute for {GROUP}"
    )
    assert headers["retry-after"] == "1"
    assert headers["anthropic-ratelimit-requests-limit"] == "60"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers.get("x-should-retry") != "false"  # a 429 may be retried

    time.sleep(max(0.0, started + 1.1 - time.monotonic()))
    third = create(client)
    assert third.limit("requests") == 60

    records = records_of_key(srv, key, 2)
    assert {r.id for r in records} == {first.request_id, third.request_id}
    assert error.response.headers["request-id"] not in {r.id for r in records}


def test_a_60_second_burst_lets_a_whole_minute_of_requests_pass_at_once(burst: Server, burst_probe: Probe) -> None:
    """With ``ORGWARDEN_RATE_LIMIT_REQUEST_BURST_SECONDS=60`` an RPM of 5 is a bucket of 5 requests:
    exactly 5 pass back to back (remaining 4, 3, 2, 1, 0), the 6th is refused until one request has
    refilled (60 / 5 = 12 s)."""
    key = new_key(burst, new_workspace(burst))
    set_key_limits(burst, key.id, entry_id(burst, model=MODEL), {"requests_per_minute": 5})
    burst_probe.sync()
    client = sdk(burst, key)

    started = time.monotonic()
    remaining = [create(client).remaining("requests") for _ in range(5)]
    assert remaining == [4, 3, 2, 1, 0]
    error = refused(lambda: create(client))
    elapsed = time.monotonic() - started
    headers = assert_refusal(error, 429, "rate_limit_error", "rate limit of 5 requests per minute")
    assert 12 - elapsed <= int(headers["retry-after"]) <= 12


# --------------------------------------------------------------------------------------------------
# 2. headers


def test_responses_carry_the_headers_of_the_most_restrictive_bucket_of_each_kind(
    burst: Server, burst_probe: Probe
) -> None:
    """Every limited answer carries ``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}
    -{limit,remaining,reset}``: remaining goes down request after request by what each used, reset is
    an RFC 3339 time when the bucket will be full again, ``tokens-*`` is the most restrictive of input
    and output. The 429 carries them too; an answer no limit applies to carries none."""
    key = new_key(burst, new_workspace(burst))
    limits = {"requests_per_minute": 3, "input_tokens_per_minute": 12_000, "output_tokens_per_minute": 6_000}
    set_key_limits(burst, key.id, entry_id(burst, model=MODEL), limits)
    free = new_key(burst, new_workspace(burst))
    burst_probe.sync()
    client = sdk(burst, key)
    messages = [{"role": "user", "content": "x" * 4000}]

    answers: list[Answer] = []
    windows: list[tuple[float, float]] = []  # wall-clock time before and after each request
    started = time.monotonic()
    for _ in range(3):
        before = time.time()
        answers.append(create(client, max_tokens=1000, output=300, messages=messages))
        after = time.time()
        windows.append((before, after))
        wait_for_record(burst, answers[-1].request_id)  # settled: 700 output tokens given back
        answer, n = answers[-1], len(answers)
        elapsed = time.monotonic() - started
        assert answer.message.usage.output_tokens == 300
        tokens = answer.message.usage.input_tokens  # the simulator's count: the reservation's estimate too
        assert tokens > 1000

        assert (answer.limit("requests"), answer.remaining("requests")) == (3, 3 - n)
        # n requests taken since the first one, refilling at 3 / 60 a second: full 20 n s after the first
        first_before, first_after = windows[0]
        reset = reset_of(answer.headers, "requests")
        assert math.floor(first_before) + 20 * n <= reset <= math.ceil(first_after) + 20 * n

        assert answer.limit("input-tokens") == 12_000
        low = 12_000 - n * tokens
        assert low <= answer.remaining("input-tokens") <= min(12_000 - tokens, low + refill(12_000, elapsed))
        assert answer.limit("output-tokens") == 6_000
        low = 6_000 - 1000 - 300 * (n - 1)
        assert low <= answer.remaining("output-tokens") <= min(5_000, low + refill(6_000, elapsed))
        for kind in ("input-tokens", "output-tokens"):
            assert before - 1 <= reset_of(answer.headers, kind) <= after + 60 + 1
        # tokens-*: the most restrictive of the two (output here)
        assert answer.remaining("output-tokens") < answer.remaining("input-tokens")
        for field in ("limit", "remaining", "reset"):
            assert answer.headers[f"anthropic-ratelimit-tokens-{field}"] == answer.headers[
                f"anthropic-ratelimit-output-tokens-{field}"]  # fmt: skip

    first = answers[0]
    assert first.remaining("input-tokens") == 12_000 - first.message.usage.input_tokens  # a fresh bucket: exact
    assert first.remaining("output-tokens") == 5_000
    reset = reset_of(first.headers, "output-tokens")  # 1000 missing, refilling at 100 a second
    assert math.floor(windows[0][0]) + 10 <= reset <= math.ceil(windows[0][1]) + 10
    for kind in ("requests", "input-tokens", "output-tokens"):
        series = [a.remaining(kind) for a in answers]
        assert series == sorted(series, reverse=True), (kind, series)
        assert len(set(series)) == 3, (kind, series)

    error = refused(lambda: create(client, max_tokens=1000, messages=messages))
    elapsed = time.monotonic() - started
    headers = assert_refusal(error, 429, "rate_limit_error", f"API key {key.id} rate limit of 3 requests per minute")
    assert 20 - elapsed <= int(headers["retry-after"]) <= 20
    assert headers["anthropic-ratelimit-requests-limit"] == "3"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert {
        f"anthropic-ratelimit-{kind}-{field}" for kind in KINDS for field in ("limit", "remaining", "reset")
    } == set(ratelimit_headers(headers))
    assert headers["anthropic-ratelimit-output-tokens-limit"] == "6000"

    unlimited = create(sdk(burst, free))
    assert ratelimit_headers(unlimited.headers) == {}


# --------------------------------------------------------------------------------------------------
# 3. cache-aware input counting


def test_cache_reads_are_charged_to_plain_itpm_but_not_to_cache_aware_itpm(srv: Server, probe: Probe) -> None:
    """Two keys, one with ``input_tokens_per_minute_cache_aware``, one with ``input_tokens_per_minute``,
    send the same request whose long system block the simulator reports as a cache read. Both reserve
    the whole estimated input at admission; once settled, the cache-aware bucket is charged only the
    uncached input, the plain bucket the whole input (cache reads included)."""
    workspace = new_workspace(srv)
    aware, plain = new_key(srv, workspace), new_key(srv, workspace)
    entry = entry_id(srv, model=MODEL)
    set_key_limits(srv, aware.id, entry, {"input_tokens_per_minute_cache_aware": 30_000})
    set_key_limits(srv, plain.id, entry, {"input_tokens_per_minute": 30_000})
    probe.sync()
    system = [
        {"type": "text", "text": "Cached context for rate limits. " * 600, "cache_control": {"type": "ephemeral"}}
    ]

    seen: dict[str, tuple[int, int, int, int]] = {}
    for name, key in (("aware", aware), ("plain", plain)):
        client = sdk(srv, key)
        started = time.monotonic()
        first = create(client, cache_read=True, system=system)
        wait_for_record(srv, first.request_id)
        second = create(client, cache_read=True, system=system)
        elapsed = time.monotonic() - started
        usage = first.message.usage
        uncached, read = usage.input_tokens, usage.cache_read_input_tokens or 0
        assert read > 4000, usage
        assert uncached < 50, usage
        assert usage.cache_creation_input_tokens == 0, usage
        assert second.message.usage == usage
        total = uncached + read
        assert first.limit("input-tokens") == 30_000
        assert first.remaining("input-tokens") == 30_000 - total  # the whole estimate reserved, on a fresh bucket
        charged = uncached if name == "aware" else total
        low = 30_000 - charged - total  # the first request's real charge, the second's reservation
        assert low <= second.remaining("input-tokens") <= min(30_000 - total, low + refill(30_000, elapsed)), name
        seen[name] = (first.remaining("input-tokens"), second.remaining("input-tokens"), read, math.ceil(elapsed))

    # the same requests; the cache-aware bucket is ahead by the cache reads of the first one
    read = seen["aware"][2]
    assert seen["aware"][0] == seen["plain"][0]
    gap = seen["aware"][1] - seen["plain"][1]
    assert read - refill(30_000, seen["plain"][3]) <= gap <= read + refill(30_000, seen["aware"][3])


# --------------------------------------------------------------------------------------------------
# 4. max_tokens: reserved, refunded, refused when it can never fit


def test_max_tokens_is_reserved_then_the_unused_part_given_back(srv: Server, probe: Probe) -> None:
    """OTPM 600: a request with max_tokens 400 leaves 200 at admission whatever it then produces;
    once it has produced 100, the 300 unused come back, so the next request (max_tokens 100) sees
    600 - 100 - 100. max_tokens above the limit can never fit: 400, not metered."""
    key = limited_key(srv, probe, {"output_tokens_per_minute": 600})
    client = sdk(srv, key)

    started = time.monotonic()
    first = create(client, max_tokens=400, output=100)
    assert first.message.usage.output_tokens == 100
    assert (first.limit("output-tokens"), first.remaining("output-tokens")) == (600, 200)
    wait_for_record(srv, first.request_id)
    second = create(client, max_tokens=100, output=100)
    elapsed = time.monotonic() - started
    assert 400 <= second.remaining("output-tokens") <= 400 + refill(600, elapsed)  # 100 if nothing came back

    error = refused(lambda: create(client, max_tokens=601))
    assert_refusal(
        error, 400, "invalid_request_error",
        f"needs 601 of your API key {key.id} limit of 600 output tokens per minute for {GROUP}", "can never fit",
        "lower max_tokens",
    )  # fmt: skip
    assert error.response.headers.get("x-should-retry") == "false"
    records = records_of_key(srv, key, 2)
    assert {r.id for r in records} == {first.request_id, second.request_id}


def test_a_streaming_request_holds_its_max_tokens_until_it_ends(srv: Server, probe: Probe) -> None:
    """OTPM 600: while a stream with max_tokens 400 is under way (50 tokens at 50 a second), 200 are
    left: a request for 300 is refused with 429, one for 150 passes. After the stream ends having
    produced 50, its 350 unused tokens are back."""
    key = limited_key(srv, probe, {"output_tokens_per_minute": 600})
    client = sdk(srv, key)

    started = time.monotonic()
    with client.messages.stream(
        model=MODEL,
        max_tokens=400,
        messages=MESSAGES,
        extra_headers=steering(output=50),
    ) as stream:
        assert stream.response.headers["anthropic-ratelimit-output-tokens-remaining"] == "200"
        stream_id = stream.response.headers["request-id"]
        error = refused(lambda: create(client, max_tokens=300))
        elapsed = time.monotonic() - started
        headers = assert_refusal(
            error, 429, "rate_limit_error", f"API key {key.id} rate limit of 600 output tokens per minute"
        )
        assert 200 <= int(headers["anthropic-ratelimit-output-tokens-remaining"]) <= 200 + refill(600, elapsed)
        assert 10 - elapsed - 1 <= int(headers["retry-after"]) <= 10  # 100 missing at 10 a second
        during = create(client, max_tokens=150, output=150)
        elapsed = time.monotonic() - started
        assert 50 <= during.remaining("output-tokens") <= 50 + refill(600, elapsed)
        assert stream.get_final_message().usage.output_tokens == 50
    assert wait_for_record(srv, stream_id).output_tokens == 50

    after = create(client, max_tokens=100, output=1)
    elapsed = time.monotonic() - started
    low = 600 - 50 - 150 - 100
    assert low <= after.remaining("output-tokens") <= low + refill(600, elapsed)


# --------------------------------------------------------------------------------------------------
# 5. streams that end early give back what they did not produce


def _next_remaining(server: Server, key: Key, record: UsageRecord, started: float) -> None:
    """After a stream with max_tokens 500 on an OTPM of 600 ended early: the next request (max_tokens
    100) sees 600 - what the stream was metered - 100 (it would be 0 had the 500 stayed reserved)."""
    answer = create(sdk(server, key), max_tokens=100, output=1)
    low = 600 - record.output_tokens - 100
    assert low <= answer.remaining("output-tokens") <= low + refill(600, time.monotonic() - started)
    assert answer.remaining("output-tokens") >= 400 - 20


def test_a_stream_the_client_aborts_gives_back_the_output_it_did_not_produce(srv: Server, probe: Probe) -> None:
    """A stream of 200 tokens at 50 a second (4 s), max_tokens 500, closed by the client after three
    text events: it is metered (status 499) with the few tokens it produced, and everything else
    of its 500 comes back to the OTPM bucket."""
    key = limited_key(srv, probe, {"output_tokens_per_minute": 600})
    client = sdk(srv, key)

    started = time.monotonic()
    with client.messages.stream(
        model=MODEL,
        max_tokens=500,
        messages=MESSAGES,
        extra_headers=steering(output=200),
    ) as stream:
        assert stream.response.headers["anthropic-ratelimit-output-tokens-remaining"] == "100"
        request_id = stream.response.headers["request-id"]
        texts = 0
        for event in stream:
            texts += event.type == "text"
            if texts == 3:
                break
    streamed = time.monotonic() - started
    assert streamed < 2
    record = wait_for_record(srv, request_id)
    assert (record.status, record.completed, record.stream, record.usage_estimated) == (499, False, True, True)
    # No message_delta: estimated from the text relayed at three bytes a token (domain.tokens), and a
    # simulator token is a word of at most 10 bytes.
    assert 3 <= record.output_tokens <= math.ceil((math.ceil(50 * streamed) + 1) * 10 / 3)
    _next_remaining(srv, key, record, started)


def test_a_stream_cut_by_the_upstream_gives_back_the_output_it_did_not_produce(srv: Server, probe: Probe) -> None:
    """A stream the upstream cuts half-way (``anthropic-simulator-fault: cut``) ends with an error
    event; it is metered (502) with what it produced, and the rest of its max_tokens comes back."""
    key = limited_key(srv, probe, {"output_tokens_per_minute": 600})

    started = time.monotonic()
    with srv.http(key.secret) as http:
        response = http.post(
            "/v1/messages",
            json={"model": MODEL, "max_tokens": 500, "messages": MESSAGES, "stream": True},
            headers=steering(output=40, fault="cut"),
        )
    assert response.status_code == 200
    assert response.headers["anthropic-ratelimit-output-tokens-remaining"] == "100"
    assert "event: error" in response.text
    assert "event: message_stop" not in response.text
    record = wait_for_record(srv, response.headers["request-id"])
    assert (record.status, record.completed, record.usage_estimated) == (502, False, True)
    assert 20 <= record.output_tokens <= math.ceil(20 * 10 / 3)  # 20 words relayed, estimated (see above)
    _next_remaining(srv, key, record, started)


# --------------------------------------------------------------------------------------------------
# 6. organization values and workspace overrides


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_lower_of_organization_and_workspace_values_binds_and_changes_apply_within_a_second(
    backend: str,
) -> None:
    """Organization: RPM 1200 (a bucket of 20), OTPM 3000. Workspace A overrides lower (RPM 60,
    OTPM 1000): its keys are held to those. Workspace C overrides higher (RPM 12000, OTPM 9000): the
    organization's values still bind. Workspace B has no override: the organization's values. Clearing
    A's override (null) restores the organization's values. Each change is in force within a second."""
    with dedicated_server(backend, {}) as server:
        entry = entry_id(server, model=MODEL)
        lower, none, higher = (new_workspace(server) for _ in range(3))
        key_a, key_b, key_c = new_key(server, lower), new_key(server, none), new_key(server, higher)
        a, b, c = sdk(server, key_a), sdk(server, key_b), sdk(server, key_c)

        set_org_limits(server, entry, {"requests_per_minute": 1200, "output_tokens_per_minute": 3000})
        took = poll(lambda: create(b, max_tokens=10, output=1).headers.get("anthropic-ratelimit-output-tokens-limit")
                    == "3000")  # fmt: skip
        assert took < 1.5

        set_workspace_limits(server, higher, entry, {"requests_per_minute": 12_000, "output_tokens_per_minute": 9000})
        set_workspace_limits(server, lower, entry, {"requests_per_minute": 60, "output_tokens_per_minute": 1000})

        def lower_in_force() -> bool:
            try:
                create(a, max_tokens=1200, output=1)
            except anthropic.BadRequestError as error:
                message = f"needs 1200 of your workspace {lower} limit of 1000 output tokens per minute"
                assert_refusal(error, 400, "invalid_request_error", message)
                return True
            return False

        assert poll(lower_in_force) < 1.5

        # workspace A: its lower values bind
        started = time.monotonic()
        answer = create(a, max_tokens=900, output=1)
        assert (answer.limit("requests"), answer.remaining("requests")) == (60, 0)
        assert (answer.limit("output-tokens"), answer.remaining("output-tokens")) == (1000, 100)
        error = refused(lambda: create(a, max_tokens=10))
        assert time.monotonic() - started < 0.9
        assert_refusal(error, 429, "rate_limit_error", f"workspace {lower} rate limit of 60 requests per minute")

        # workspace B: the organization's values
        for _ in range(2):
            answer = create(b, max_tokens=1200, output=1)
            assert (answer.limit("requests"), answer.limit("output-tokens")) == (1200, 3000)
            assert answer.remaining("output-tokens") <= 3000 - 1200

        # workspace C: an override above the organization's values changes nothing
        assert_refusal(refused(lambda: create(c, max_tokens=3500)), 400, "invalid_request_error",
                       "needs 3500 of your organization limit of 3000 output tokens per minute")  # fmt: skip
        answer = create(c, max_tokens=1200, output=1)
        assert (answer.limit("requests"), answer.limit("output-tokens")) == (1200, 3000)
        assert answer.remaining("requests") < 20
        assert answer.remaining("output-tokens") <= 3000 - 1200

        # clearing A's override restores the organization's values
        set_workspace_limits(server, lower, entry, {"requests_per_minute": None, "output_tokens_per_minute": None})
        restored: list[Answer] = []

        def org_in_force() -> bool:
            try:
                restored.append(create(a, max_tokens=1200, output=1))
            except anthropic.BadRequestError:
                return False
            return True

        assert poll(org_in_force) < 1.5
        assert (restored[-1].limit("requests"), restored[-1].limit("output-tokens")) == (1200, 3000)


# --------------------------------------------------------------------------------------------------
# 7. per-key values


def test_a_key_value_lower_than_its_workspace_binds_for_that_key_only(srv: Server, probe: Probe) -> None:
    """Workspace override RPM 1200 / OTPM 5000; one of its keys has RPM 60 / OTPM 1000 of its own:
    that key is held to its values (the refusals name the key), the other key to the workspace's."""
    workspace = new_workspace(srv)
    limited, other = new_key(srv, workspace), new_key(srv, workspace)
    entry = entry_id(srv, model=MODEL)
    set_workspace_limits(srv, workspace, entry, {"requests_per_minute": 1200, "output_tokens_per_minute": 5000})
    set_key_limits(srv, limited.id, entry, {"requests_per_minute": 60, "output_tokens_per_minute": 1000})
    probe.sync()
    client = sdk(srv, limited)

    assert_refusal(refused(lambda: create(client, max_tokens=1500)), 400, "invalid_request_error",
                   f"needs 1500 of your API key {limited.id} limit of 1000 output tokens per minute")  # fmt: skip
    started = time.monotonic()
    answer = create(client, max_tokens=900, output=1)
    assert (answer.limit("requests"), answer.remaining("requests")) == (60, 0)
    assert (answer.limit("output-tokens"), answer.remaining("output-tokens")) == (1000, 100)
    error = refused(lambda: create(client, max_tokens=10))
    assert time.monotonic() - started < 0.9
    assert_refusal(error, 429, "rate_limit_error", f"API key {limited.id} rate limit of 60 requests per minute")

    unaffected = sdk(srv, other)
    for _ in range(3):
        answer = create(unaffected, max_tokens=1500, output=1)
        assert (answer.limit("requests"), answer.limit("output-tokens")) == (1200, 5000)
        assert answer.remaining("output-tokens") <= 5000 - 1500


# --------------------------------------------------------------------------------------------------
# 8. count_tokens


def test_count_tokens_is_limited_by_the_token_count_group_and_messages_are_not(
    burst: Server, burst_probe: Probe
) -> None:
    """The organization's ``token_count`` RPM (3, a bucket of 3 with the 60-second burst) limits
    count_tokens: three pass, the fourth is refused naming Token counting. Messages requests are
    not counted against it (no rate-limit headers, none refused). Only answered requests are metered."""
    key = new_key(burst, new_workspace(burst))
    set_org_limits(burst, entry_id(burst, group_type="token_count"), {"requests_per_minute": 3})
    burst_probe.sync()
    client = sdk(burst, key)

    def count() -> tuple[dict[str, str], int]:
        raw = client.messages.with_raw_response.count_tokens(model=MODEL, messages=MESSAGES)
        return {k.lower(): v for k, v in raw.headers.items()}, raw.parse().input_tokens

    try:
        counted = [count() for _ in range(3)]
        assert [h["anthropic-ratelimit-requests-limit"] for h, _ in counted] == ["3"] * 3
        assert [h["anthropic-ratelimit-requests-remaining"] for h, _ in counted] == ["2", "1", "0"]
        assert all(tokens > 0 for _, tokens in counted)
        assert all("anthropic-ratelimit-output-tokens-limit" not in h for h, _ in counted)
        error = refused(count)
        assert_refusal(
            error, 429, "rate_limit_error", "organization rate limit of 3 requests per minute for Token counting"
        )

        answers = [create(client) for _ in range(3)]
        assert all(ratelimit_headers(a.headers) == {} for a in answers)
        records = records_of_key(burst, key, 6)
        assert sorted(r.endpoint for r in records) == ["count_tokens"] * 3 + ["messages"] * 3
        assert error.response.headers["request-id"] not in {r.id for r in records}
    finally:
        set_org_limits(burst, entry_id(burst, group_type="token_count"), {"requests_per_minute": None})
