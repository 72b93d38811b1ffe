"""``domain.jsonload.loads`` answers exactly what ``json.loads`` answers, faster where it can."""

from __future__ import annotations

import json

import pytest

from orgwarden.domain.jsonload import loads

ACCEPTED = [
    b'{"model":"claude-sonnet-4-6","max_tokens":16,"messages":[{"role":"user","content":"caf\\u00e9 \xe2\x9c\x93"}]}',
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',  # orjson refuses these; json accepts them
    b'{"max_tokens": 100000000000000000000000000000}',  # beyond 64 bits: orjson would make it a float
    b'{"max_tokens": 9223372036854775808, "n": -9223372036854775809}',
    b'{"big": 1234567890123456789012345678901234567890.5}',
    b'{"text": "\\ud800 alone"}',  # a lone surrogate escape
    '{"text": "utf-16"}'.encode("utf-16"),  # json detects UTF-16/32
    b'{"dup": 1, "dup": 2}',
    b"[1, 2.5, true, null]",
]
REFUSED = [b"", b"{", b'{"a": 1,}', b"\xff\xfe\x00", b"{'single': 1}"]


@pytest.mark.parametrize("data", ACCEPTED)
def test_what_json_accepts_parses_to_the_same_value(data: bytes) -> None:
    expected = json.loads(data)
    got = loads(data)
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert type(got) is type(expected)
    if isinstance(expected, dict):
        assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize("data", REFUSED)
def test_what_json_refuses_is_refused_with_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the type is the contract: callers catch ValueError
        json.loads(data)
    with pytest.raises(ValueError):  # noqa: PT011
        loads(data)
