"""The pure rules of Claude Code telemetry: temporality, units, rounding, tools, actors, days."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from orgwarden.domain.claude_code import (
    API_ACTOR,
    COST,
    CUMULATIVE,
    DELTA,
    SESSIONS,
    TOKENS,
    USER_ACTOR,
    Actor,
    Progress,
    Sample,
    Tally,
    actor_of,
    advance,
    cents,
    day_of,
    stored_value,
    tool_key,
)

SECOND = 1_000_000_000


def sample(value: int, start: int, end: int, temporality: int = CUMULATIVE, **attributes: str) -> Sample:
    return Sample(SESSIONS, "s", temporality, start * SECOND, end * SECOND, value, attributes)


def run(points: list[Sample]) -> list[int]:
    progress: Progress | None = None
    added = []
    for point in points:
        amount, after = advance(progress, point)
        progress = after or progress
        added.append(amount)
    return added


def test_cumulative_points_add_what_grew_since_the_last_one_and_a_new_start_is_a_reset() -> None:
    assert run([sample(3, 0, 10), sample(3, 0, 20), sample(5, 0, 30), sample(2, 31, 40), sample(4, 31, 50)]) == [
        3, 0, 2, 2, 2,
    ]  # fmt: skip


def test_a_cumulative_value_that_went_down_is_a_reset() -> None:
    assert run([sample(7, 0, 10), sample(2, 0, 20)]) == [7, 2]


def test_repeated_and_late_points_add_nothing_in_either_temporality() -> None:
    assert run([sample(5, 0, 10), sample(5, 0, 10), sample(4, 0, 9)]) == [5, 0, 0]
    delta = [sample(2, 0, 10, DELTA), sample(2, 0, 10, DELTA), sample(3, 10, 20, DELTA), sample(1, 5, 8, DELTA)]
    assert run(delta) == [2, 0, 3, 0]


def test_values_are_stored_as_picodollars_or_whole_counts_rounding_half_to_even() -> None:
    assert stored_value(COST, 0.0123) == 12_300_000_000
    assert stored_value(COST, 0.1 + 0.2) == 300_000_000_000  # 0.30000000000000004 USD
    assert stored_value(COST, 5e-13) == 0  # half a picodollar: to even
    assert stored_value(TOKENS, 2.5) == 2
    assert stored_value(TOKENS, 3.5) == 4
    assert stored_value(TOKENS, 12) == 12
    for metric, value in [(COST, 1e300), (COST, 4_611_686.1), (TOKENS, -(2.0**62))]:
        with pytest.raises(ValueError, match="out of range"):
            stored_value(metric, value)


def test_cents_are_rounded_half_to_even_to_a_hundredth() -> None:
    assert cents(13_400_000_000) == Decimal("1.34")
    assert cents(850_000_000_000) == Decimal("85.00")
    assert cents(50_000_000) == Decimal("0.00")  # 0.005 cents
    assert cents(150_000_000) == Decimal("0.02")  # 0.015 cents


@pytest.mark.parametrize(
    ("name", "key"),
    [("Edit", "edit_tool"), ("MultiEdit", "multi_edit_tool"), ("Write", "write_tool"),
     ("NotebookEdit", "notebook_edit_tool"), ("Bash", "bash_tool"), ("WebFetch", "web_fetch_tool"),
     ("mcp__github__create_pr", "mcp_github_create_pr_tool"), ("Task tool", "task_tool"), ("", "unknown_tool")],
)  # fmt: skip
def test_tool_names_map_to_the_specs_keys_and_others_to_snake_case(name: str, key: str) -> None:
    assert tool_key(name) == key


def test_the_actor_is_the_users_email_else_the_api_key() -> None:
    assert actor_of({"user.email": "a@b.test"}, "apikey_1") == Actor(USER_ACTOR, "a@b.test")
    assert actor_of({"user.email": "  "}, "apikey_1") == Actor(API_ACTOR, "apikey_1")
    assert actor_of({}, "apikey_1") == Actor(API_ACTOR, "apikey_1")


def test_a_point_counts_on_the_utc_day_it_ends() -> None:
    assert day_of(1_754_697_599 * SECOND + 999_999_999) == date(2025, 8, 8)
    assert day_of(1_754_697_600 * SECOND) == date(2025, 8, 9)


def test_unknown_attribute_values_add_nothing_but_still_list_the_actor() -> None:
    tally = Tally()
    actor = Actor(USER_ACTOR, "a@b.test")
    tally.add(Sample(TOKENS, "t", DELTA, 0, SECOND, 10, {"type": "reasoning", "model": "m"}), 10, actor)
    assert tally.models == {}
    assert list(tally.daily) == [(date(1970, 1, 1), USER_ACTOR, "a@b.test", "unknown")]
