"""The ``anthropic-allowed-org-ids`` grammar, on raw header pairs exactly as ASGI hands them over."""

from __future__ import annotations

import uuid

import pytest

from orgwarden.domain.tenant import MAX_IDS, TenantHeaderError, is_allowed, parse_allowed_org_ids

Headers = list[tuple[bytes, bytes]]

BASE = b"anthropic-allowed-org-ids"
A = "550e8400-e29b-41d4-a716-446655440000"
B = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
C = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
MULTIPLE = "Multiple anthropic-allowed-org-ids headers"
MALFORMED = "Malformed anthropic-allowed-org-ids headers"


def slot(number: int) -> bytes:
    return BASE + str(number).encode()


def org_ids(count: int) -> list[str]:
    return [str(uuid.UUID(int=index + 1)) for index in range(count)]


def split(ids: list[str], slots: int) -> Headers:
    """``ids`` spread over the base header (with ``;n=slots``) and slots 1..slots-1, as evenly as possible."""
    size = -(-len(ids) // slots)
    parts = [ids[i * size : (i + 1) * size] for i in range(slots)]
    headers: Headers = [(BASE, (",".join(parts[0]) + f";n={slots}").encode())]
    headers += [(slot(i), ",".join(parts[i]).encode()) for i in range(1, slots)]
    return headers


def refused(headers: Headers) -> TenantHeaderError:
    with pytest.raises(TenantHeaderError) as caught:
        parse_allowed_org_ids(headers)
    return caught.value


def assert_malformed(headers: Headers) -> None:
    error = refused(headers)
    assert str(error).startswith(MALFORMED), str(error)
    assert error.kind == "malformed"


def assert_multiple(headers: Headers) -> None:
    error = refused(headers)
    assert str(error).startswith(MULTIPLE), str(error)
    assert error.kind == "multiple"


# -- what parses --------------------------------------------------------------------------------


def test_no_header_at_all_means_no_restriction() -> None:
    assert parse_allowed_org_ids([]) is None
    assert parse_allowed_org_ids([(b"x-api-key", b"sk-ant-api03-x"), (b"content-type", b"application/json")]) is None


def test_a_single_organization_id_is_the_whole_allowed_set() -> None:
    assert parse_allowed_org_ids([(BASE, A.encode())]) == frozenset({A})


def test_several_comma_separated_organization_ids_are_all_allowed() -> None:
    assert parse_allowed_org_ids([(BASE, f"{A},{B},{C}".encode())]) == frozenset({A, B, C})


def test_the_header_name_is_matched_in_any_letter_case() -> None:
    assert parse_allowed_org_ids([(b"Anthropic-Allowed-Org-Ids", A.encode())]) == frozenset({A})
    assert parse_allowed_org_ids([(b"ANTHROPIC-ALLOWED-ORG-IDS", A.encode())]) == frozenset({A})


def test_uuids_are_compared_without_regard_to_letter_case() -> None:
    allowed = parse_allowed_org_ids([(BASE, A.upper().encode())])
    assert allowed == frozenset({A})
    assert is_allowed(A, allowed)
    assert is_allowed(A.upper(), allowed)
    assert is_allowed(A.upper(), parse_allowed_org_ids([(BASE, A.encode())]))


def test_an_unrelated_header_that_shares_the_prefix_is_ignored() -> None:
    headers: Headers = [
        (b"anthropic-allowed-org-ids-extra", b"not a uuid, at all"),
        (b"anthropic-allowed-org-idsx", b""),
        (b"Anthropic-Allowed-Org-Ids-Extra", b"again"),
    ]
    assert parse_allowed_org_ids(headers) is None
    assert parse_allowed_org_ids([*headers, (BASE, A.encode())]) == frozenset({A})


def test_a_slot_count_of_one_declares_no_further_slots() -> None:
    assert parse_allowed_org_ids([(BASE, f"{A};n=1".encode())]) == frozenset({A})


def test_a_slot_count_of_two_takes_the_ids_of_slot_one_as_well() -> None:
    headers: Headers = [(BASE, f"{A};n=2".encode()), (slot(1), f"{B},{C}".encode())]
    assert parse_allowed_org_ids(headers) == frozenset({A, B, C})


def test_a_slot_count_of_ten_takes_the_ids_of_slots_one_to_nine() -> None:
    ids = org_ids(10)
    headers = split(ids, 10)
    assert len(headers) == 10
    assert parse_allowed_org_ids(headers) == frozenset(ids)


def test_numbered_slots_may_come_in_any_order_and_letter_case() -> None:
    headers: Headers = [
        (b"Anthropic-Allowed-Org-Ids2", C.encode()),
        (BASE, f"{A};n=3".encode()),
        (b"ANTHROPIC-ALLOWED-ORG-IDS1", B.encode()),
    ]
    assert parse_allowed_org_ids(headers) == frozenset({A, B, C})


def test_exactly_five_hundred_ids_across_ten_slots_are_accepted() -> None:
    ids = org_ids(MAX_IDS)
    assert MAX_IDS == 500
    assert parse_allowed_org_ids(split(ids, 10)) == frozenset(ids)


def test_exactly_five_hundred_ids_in_one_header_are_accepted() -> None:
    ids = org_ids(500)
    assert parse_allowed_org_ids([(BASE, ",".join(ids).encode())]) == frozenset(ids)


# -- is_allowed -----------------------------------------------------------------------------------


def test_without_a_restriction_every_organization_is_allowed() -> None:
    assert is_allowed(A, None)


def test_a_listed_organization_is_allowed_and_an_unlisted_one_is_not() -> None:
    allowed = frozenset({A, B})
    assert is_allowed(A, allowed)
    assert is_allowed(B, allowed)
    assert not is_allowed(C, allowed)


# -- Multiple ... ---------------------------------------------------------------------------------


def test_the_base_header_twice_in_different_letter_case_is_refused_as_multiple() -> None:
    assert_multiple([(b"anthropic-allowed-org-ids", A.encode()), (b"Anthropic-Allowed-Org-Ids", A.encode())])


def test_the_base_header_twice_in_the_same_letter_case_is_refused_as_multiple() -> None:
    assert_multiple([(BASE, A.encode()), (BASE, B.encode())])


def test_a_numbered_slot_twice_is_refused_as_multiple() -> None:
    assert_multiple([(BASE, f"{A};n=2".encode()), (slot(1), B.encode()), (b"Anthropic-Allowed-Org-Ids1", C.encode())])


def test_the_multiple_message_names_the_repeated_header() -> None:
    error = refused([(BASE, f"{A};n=3".encode()), (slot(1), B.encode()), (slot(2), C.encode()), (slot(2), C.encode())])
    assert "anthropic-allowed-org-ids2" in str(error)


# -- Malformed ... --------------------------------------------------------------------------------


@pytest.mark.parametrize("count", ["n=0", "n=11", "n=99", "n=100"], ids=["zero", "eleven", "ninety-nine", "hundred"])
def test_a_slot_count_outside_one_to_ten_is_malformed(count: str) -> None:
    assert_malformed([(BASE, f"{A};{count}".encode()), *[(slot(i), B.encode()) for i in range(1, 11)]])


@pytest.mark.parametrize("count", ["n=two", "n=", "n=-1", "n=+2", "m=2", "N=2", "n=2;n=2", "n=2 ", "2", ""], ids=repr)
def test_a_slot_count_that_is_not_n_equals_a_number_is_malformed(count: str) -> None:
    assert_malformed([(BASE, f"{A};{count}".encode()), (slot(1), B.encode())])


def test_a_declared_slot_that_is_missing_is_malformed() -> None:
    assert_malformed([(BASE, f"{A};n=3".encode()), (slot(1), B.encode())])
    assert_malformed([(BASE, f"{A};n=3".encode()), (slot(2), B.encode())])
    assert_malformed([(BASE, f"{A};n=2".encode())])


def test_a_slot_beyond_the_declared_count_is_malformed() -> None:
    assert_malformed([(BASE, f"{A};n=2".encode()), (slot(1), B.encode()), (slot(2), C.encode())])
    assert_malformed([(BASE, f"{A};n=1".encode()), (slot(1), B.encode())])
    assert_malformed([(BASE, f"{A};n=10".encode()), *[(slot(i), B.encode()) for i in range(1, 11)]])


def test_a_numbered_slot_without_a_slot_count_is_malformed() -> None:
    assert_malformed([(BASE, A.encode()), (slot(1), B.encode())])


def test_a_numbered_slot_without_the_base_header_is_malformed() -> None:
    assert_malformed([(slot(1), B.encode())])
    assert_malformed([(slot(1), B.encode()), (slot(2), C.encode())])


def test_five_hundred_and_one_ids_across_ten_slots_are_malformed() -> None:
    assert_malformed(split(org_ids(501), 10))


def test_five_hundred_and_one_ids_in_one_header_are_malformed() -> None:
    assert_malformed([(BASE, ",".join(org_ids(501)).encode())])


def test_an_empty_value_is_malformed() -> None:
    assert_malformed([(BASE, b"")])


def test_an_empty_numbered_slot_is_malformed() -> None:
    assert_malformed([(BASE, f"{A};n=2".encode()), (slot(1), b"")])


def test_an_empty_base_list_before_the_slot_count_is_malformed() -> None:
    assert_malformed([(BASE, b";n=2"), (slot(1), B.encode())])


@pytest.mark.parametrize("value", [f"{A},,{B}", f"{A},", f",{A}", ",", f"{A},{B},"], ids=repr)
def test_an_empty_element_is_malformed(value: str) -> None:
    assert_malformed([(BASE, value.encode())])


@pytest.mark.parametrize(
    "value",
    [
        "not-a-uuid",
        f"{A},org-123",
        A.replace("-", ""),
        "{" + A + "}",
        A[:-1],
        A + "0",
        A.replace("a", "g"),
        f"urn:uuid:{A}",
    ],
    ids=repr,
)
def test_an_entry_that_is_not_a_uuid_is_malformed(value: str) -> None:
    assert_malformed([(BASE, value.encode())])


def test_a_non_uuid_entry_in_a_numbered_slot_is_malformed() -> None:
    assert_malformed([(BASE, f"{A};n=2".encode()), (slot(1), b"acme")])


@pytest.mark.parametrize("value", [f"{A}, {B}", f"{A} ,{B}", f" {A}", f"{A} ", f"{A},\t{B}", f"{A} ;n=1"], ids=repr)
def test_white_space_anywhere_in_the_value_is_malformed(value: str) -> None:
    assert_malformed([(BASE, value.encode())])


def test_white_space_in_a_numbered_slot_is_malformed() -> None:
    assert_malformed([(BASE, f"{A};n=2".encode()), (slot(1), f"{B}, {C}".encode())])


# -- a value seen before -------------------------------------------------------------------------


def test_a_value_seen_before_gives_the_same_answer_and_still_obeys_every_other_rule() -> None:
    value = f"{A.upper()},{B}".encode()
    first = parse_allowed_org_ids([(BASE, value)])
    assert first == frozenset({A, B})
    assert parse_allowed_org_ids([(b"Anthropic-Allowed-Org-Ids", value)]) == first
    assert_multiple([(BASE, value), (BASE, value)])
    assert_malformed([(BASE, value), (slot(1), B.encode())])


def test_a_malformed_value_is_refused_every_time_it_comes() -> None:
    for _ in range(3):
        assert_malformed([(BASE, f"{A} ".encode())])
        assert_malformed([(BASE, f"{A};n=2".encode())])


def test_many_different_values_all_parse_right() -> None:
    values = org_ids(600)
    for value in values + values:
        assert parse_allowed_org_ids([(BASE, value.encode())]) == frozenset({value})
