"""Continuous token buckets: refill, all-or-nothing reservation, and settling to real usage."""

from __future__ import annotations

import math

import pytest

from orgwarden.domain.buckets import Bucket, Limiter, Spec, refilled, reserve, settle

RPM = Spec(Limiter.REQUESTS_PER_MINUTE, 60)
ITPM = Spec(Limiter.INPUT_TOKENS_PER_MINUTE, 6000)


def test_sixty_requests_a_minute_allow_about_one_a_second_not_sixty_at_once() -> None:
    state: dict[str, Bucket] = {}
    first = reserve(state, [("rpm", RPM, 1)], now=0.0)
    assert first.allowed
    second = reserve(first.buckets, [("rpm", RPM, 1)], now=0.0)
    assert not second.allowed
    assert second.retry_after == pytest.approx(1.0)
    third = reserve(first.buckets, [("rpm", RPM, 1)], now=1.0)
    assert third.allowed


def test_over_a_minute_the_number_of_requests_matches_the_limit() -> None:
    state: dict[str, Bucket] = {}
    allowed = 0
    for tick in range(600):  # every 0.1 s for a minute
        verdict = reserve(state, [("rpm", RPM, 1)], now=tick / 10)
        state = dict(verdict.buckets)
        allowed += verdict.allowed
    assert allowed in (60, 61)


def test_a_refusal_takes_nothing_from_any_bucket() -> None:
    state = {"rpm": Bucket(1.0, 0.0), "itpm": Bucket(100.0, 0.0)}
    verdict = reserve(state, [("rpm", RPM, 1), ("itpm", ITPM, 500)], now=0.0)
    assert not verdict.allowed
    assert verdict.blocking == "itpm"
    assert verdict.buckets["rpm"].level == 1.0
    assert verdict.retry_after == pytest.approx(400 / 100)  # 400 tokens missing at 100 a second


def test_a_request_larger_than_the_bucket_can_never_pass() -> None:
    verdict = reserve({}, [("itpm", ITPM, 6001)], now=0.0)
    assert not verdict.allowed
    assert math.isinf(verdict.retry_after)


def test_refill_is_continuous_and_capped_at_capacity() -> None:
    assert refilled(Bucket(0.0, 0.0), ITPM, 30.0).level == pytest.approx(3000)
    assert refilled(Bucket(0.0, 0.0), ITPM, 600.0).level == 6000


def test_settling_returns_unused_tokens_and_takes_overruns() -> None:
    reserved = reserve({}, [("otpm", ITPM, 4000)], now=0.0).buckets
    back = settle(reserved, [("otpm", ITPM, 3000)], now=0.0)  # 1000 used of 4000 reserved
    assert back["otpm"].level == pytest.approx(5000)
    over = settle(reserved, [("otpm", ITPM, -5000)], now=0.0)  # the estimate was 5000 too low
    assert over["otpm"].level == pytest.approx(-3000)
    assert not reserve(over, [("otpm", ITPM, 1)], now=0.0).allowed
    assert settle(reserved, [("otpm", ITPM, 10_000)], now=0.0)["otpm"].level == 6000  # never above capacity
