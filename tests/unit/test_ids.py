"""Identifiers and credential formats (``orgwarden.ids``): pure, no database, no server."""

from __future__ import annotations

import hashlib
import itertools
import re
import time
import uuid

import pytest

from orgwarden import ids

BODY = re.compile(r"01[0-9A-Za-z]{22}")
URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


def decode_time(identifier: str) -> int:
    """The creation time in milliseconds encoded in characters 3-11 of an id's body."""
    body = identifier.split("_", 1)[1]
    value = 0
    for char in body[2:11]:
        value = value * len(ids.ALPHABET) + ids.ALPHABET.index(char)
    return value


@pytest.mark.parametrize("prefix", [ids.WORKSPACE, ids.USER, ids.API_KEY, ids.INVITE, ids.REQUEST, ids.AUDIT_EVENT])
def test_an_id_is_its_prefix_then_01_then_22_more_characters(prefix: str) -> None:
    identifier = ids.new_id(prefix)
    head, _, body = identifier.partition("_")
    assert head == prefix
    assert len(body) == 24
    assert BODY.fullmatch(body), identifier
    assert ids.looks_like(prefix, identifier)


def test_the_known_prefixes_are_anthropics() -> None:
    assert (ids.WORKSPACE, ids.USER, ids.API_KEY, ids.INVITE, ids.REQUEST) == (
        "wrkspc",
        "user",
        "apikey",
        "invite",
        "req",
    )


def test_ids_generated_in_a_loop_are_strictly_increasing_and_distinct() -> None:
    generated = [ids.new_id(ids.WORKSPACE) for _ in range(20_000)]
    assert all(a < b for a, b in itertools.pairwise(generated))
    assert len(set(generated)) == len(generated)


def test_ids_sort_in_creation_order_in_python_and_byte_wise() -> None:
    generated = [ids.new_id(ids.USER) for _ in range(500)]
    time.sleep(0.002)
    generated += [ids.new_id(ids.USER) for _ in range(500)]
    assert sorted(generated) == generated
    assert sorted(generated, key=lambda s: s.encode()) == generated  # what PostgreSQL's "C" collation does


def test_ids_of_different_prefixes_made_later_have_later_bodies() -> None:
    first = ids.new_id(ids.INVITE).split("_", 1)[1]
    second = ids.new_id(ids.API_KEY).split("_", 1)[1]
    assert first < second


def test_an_id_encodes_its_creation_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    identifier = ids.new_id(ids.WORKSPACE)
    after = time.time_ns() // 1_000_000
    assert before - 1_000 <= decode_time(identifier) <= after + 1_000  # within one counted-up burst


def tail_of(sequence: ids._Sequence) -> int:
    """The random tail of the id a sequence's state names, as a number."""
    text = sequence.head[2 + 9 :] + ids._encode(sequence.low, 5)
    assert len(text) == 13
    return sum(ids.ALPHABET.index(char) * 62**power for power, char in enumerate(reversed(text)))


@pytest.mark.parametrize(
    ("high", "low"), [(0, 0), (5, 62**5 - 2), (5, 62**5 - 1), (62**8 // 2, 62**5 - 1), (62**8 - 2, 62**5 - 1)]
)
def test_within_a_millisecond_the_random_tail_counts_up_by_one_across_every_digit(high: int, low: int) -> None:
    sequence = ids._Sequence()
    sequence.start(1_700_000_000_000, high, low)
    before = tail_of(sequence)
    assert before == high * 62**5 + low
    sequence.advance(1_700_000_000_000)
    assert sequence.ms == 1_700_000_000_000
    assert tail_of(sequence) == before + 1


def test_a_later_millisecond_draws_a_random_tail_in_the_lower_half() -> None:
    sequence = ids._Sequence()
    sequence.start(1_700_000_000_000, 62**8 - 1, 62**5 - 1)
    sequence.advance(1_700_000_000_001)
    assert sequence.ms == 1_700_000_000_001
    assert sequence.head[:11] == "01" + ids._encode(1_700_000_000_001, 9)
    assert tail_of(sequence) < 62**13 // 2


def test_the_alphabet_is_in_ascii_order_so_encoded_numbers_sort_as_strings() -> None:
    assert list(ids.ALPHABET) == sorted(ids.ALPHABET)
    assert len(set(ids.ALPHABET)) == 62


@pytest.mark.parametrize(
    "value",
    [
        "wrkspc_01",
        "wrkspc_01AAAAAAAAAAAAAAAAAAAAAAA",  # 25 characters
        "wrkspc_01AAAAAAAAAAAAAAAAAAAAA",  # 23 characters
        "wrkspc_01AAAAAAAAAAAAAAAAAAAA-A",
        "user_01AAAAAAAAAAAAAAAAAAAAAA",
        "wrkspc01AAAAAAAAAAAAAAAAAAAAAA",
        "",
    ],
)
def test_looks_like_refuses_what_is_not_an_id_of_that_prefix(value: str) -> None:
    assert not ids.looks_like(ids.WORKSPACE, value)


def test_an_api_key_is_sk_ant_api03_then_93_url_safe_characters_then_aa() -> None:
    secret = ids.new_api_key_secret()
    assert secret.startswith("sk-ant-api03-")
    assert secret.endswith("AA")
    assert len(secret) == 108
    body = secret.removeprefix("sk-ant-api03-")[:-2]
    assert len(body) == 93
    assert URLSAFE.fullmatch(body)


def test_an_admin_key_is_sk_ant_admin01_then_93_url_safe_characters_then_aa() -> None:
    secret = ids.new_admin_key_secret()
    assert secret.startswith("sk-ant-admin01-")
    assert secret.endswith("AA")
    body = secret.removeprefix("sk-ant-admin01-")[:-2]
    assert len(body) == 93
    assert URLSAFE.fullmatch(body)
    assert len(secret) == len("sk-ant-admin01-") + 95


def test_secrets_and_tokens_do_not_repeat() -> None:
    assert len({ids.new_api_key_secret() for _ in range(1_000)}) == 1_000
    assert len({ids.new_admin_key_secret() for _ in range(1_000)}) == 1_000
    tokens = {ids.new_token() for _ in range(1_000)}
    assert len(tokens) == 1_000
    assert all(URLSAFE.fullmatch(token) and len(token) == 43 for token in tokens)  # 256 bits


def test_the_partial_hint_is_the_prefix_three_characters_and_the_last_four() -> None:
    secret = "sk-ant-api03-R2D" + "x" * 90 + "igAA"
    assert ids.partial_hint(secret) == "sk-ant-api03-R2D...igAA"
    admin = ids.new_admin_key_secret()
    hint = ids.partial_hint(admin)
    assert hint == f"sk-ant-admin01-{admin[15:18]}...{admin[-4:]}"
    assert re.fullmatch(r"sk-ant-admin01-[A-Za-z0-9_-]{3}\.\.\.[A-Za-z0-9_-]{2}AA", hint)
    assert ids.partial_hint("abcdefghijklmnop") == "abc...mnop"


def test_the_partial_hint_of_a_real_key_reveals_only_seven_secret_characters() -> None:
    secret = ids.new_api_key_secret()
    hint = ids.partial_hint(secret)
    assert len(hint) == len("sk-ant-api03-") + 3 + 3 + 4
    assert secret not in hint


def test_a_secret_is_stored_as_its_sha256_and_matches_only_itself() -> None:
    secret = ids.new_api_key_secret()
    digest = ids.hash_secret(secret)
    assert digest == hashlib.sha256(secret.encode()).hexdigest()
    assert len(digest) == 64
    assert ids.hash_secret(secret) == digest
    assert ids.secret_matches(secret, digest)
    assert not ids.secret_matches(secret + "x", digest)
    assert not ids.secret_matches(ids.new_api_key_secret(), digest)
    assert not ids.secret_matches(secret, "")


def test_organization_ids_are_uuid4_and_request_ids_are_tagged() -> None:
    organization = ids.new_organization_id()
    assert uuid.UUID(organization).version == 4
    assert str(uuid.UUID(organization)) == organization
    assert ids.looks_like(ids.REQUEST, ids.new_request_id())
